"""A broadcast on the real daemon: started with `botvisor broadcast`, its worker SIGKILLed
mid-way, resumed by the restarted worker, and no chat receives it twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.services import open_registry
from tests.daemon import daemon_env, free_port, start_daemon
from tests.e2e.test_daemon_e2e import register

pytestmark = pytest.mark.timeout(120)
CHATS = 300


@pytest.fixture
async def fast_emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(per_bot="300/1") as emu:
        yield emu


async def start_cli(settings: Settings, api_base: str, *args: str) -> asyncio.subprocess.Process:
    """`botvisor broadcast …` as a child process (its stdout piped)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "supervisor.cli.main",
        "broadcast",
        *args,
        env=daemon_env(settings, api_base, free_port()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_a_broadcast_survives_a_worker_sigkill_and_no_chat_gets_it_twice(
    fresh_settings: Callable[..., Settings], fast_emulator: RunningEmulator, tmp_path: Path
) -> None:
    emu = fast_emulator
    settings = fresh_settings(
        workers={"count": 1},
        ratelimit={"per_bot": {"limit": 300, "period_s": 1.0}},
        broadcasts={"lease_s": 1.0, "scan_interval_s": 0.2},
    )
    (bot,) = await register(settings, emu, 1)
    emu.state.create_chats(bot.id, CHATS)
    async with open_registry(settings) as registry:
        await registry.pool.execute(
            "INSERT INTO chats (bot_id, chat_id) SELECT $1, g FROM generate_series(1, $2) g",
            bot.id,
            CHATS,
        )
    async with start_daemon(
        settings, emu.base_url, tmp_path, expect_warnings=("worker.died",)
    ) as daemon:
        # started and followed to its end by one CLI run, while its worker is killed
        args = (str(bot.id), "--text", "news", "--follow", "--json")
        follower = await start_cli(settings, emu.base_url, *args)
        async with asyncio.timeout(20):
            await emu.state.wait_until(lambda: emu.state.sent >= 60)
        pid = (await daemon.status())["workers"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        await daemon.wait_status(
            lambda s: s["workers"][0]["pid"] not in (None, pid) and s["ready"], timeout=60
        )
        out, err = await asyncio.wait_for(follower.communicate(), 30)
        assert follower.returncode == 0, err.decode()
        final = orjson.loads(out.decode().strip().splitlines()[-1])
        log = daemon.log_text()
    assert "worker.died" in log
    assert final["state"] == "done" and final["remaining"] == 0
    assert final["sent"] + final["unknown"] == CHATS and final["failed"] == final["blocked"] == 0
    assert final["unknown"] <= settings.broadcasts.batch_max  # one batch in doubt at most
    per_chat = [s["sent"] for s in (emu.state.chat_stats(bot.id) or {}).values()]
    assert max(per_chat) == 1  # nobody twice
    # every recorded send happened; the in-doubt ones may or may not have gone out
    assert final["sent"] <= emu.state.sent <= final["sent"] + final["unknown"]
    assert emu.state.telegram_429 == 0
