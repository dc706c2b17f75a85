"""The daemon end to end: real master and worker processes, real Redis and PostgreSQL,
the Bot API emulator as Telegram (in this process, so tests can await its state)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.registry.bot_records import BotRecord, BotState
from supervisor.services import open_registry
from tests.daemon import has_sample, start_daemon

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


async def register(
    settings: Settings, emu: RunningEmulator, n: int, **settings_json: Any
) -> list[Any]:
    async with emu.control() as ctl:
        bots = await ctl.create_bots(n)
    async with open_registry(settings) as registry:
        await registry.add_many([(BotToken(b.token), f"bot{b.id}") for b in bots])
    return bots


async def wait_replied(emu: RunningEmulator, n: int, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        await emu.state.wait_until(lambda: emu.state.stats(False)["totals"]["replied"] >= n)
    return emu.state.stats(False)["totals"]


async def test_500_bots_on_two_workers_answer_every_message_once_in_order(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(workers={"count": 2})
    bots = await register(settings, emulator, 500)
    async with start_daemon(settings, emulator.base_url, tmp_path) as daemon:
        status = await daemon.status()
        assert [w["bots_running"] for w in status["workers"]] == [
            w["bots_desired"] for w in status["workers"]
        ]
        assert sum(w["bots_running"] for w in status["workers"]) == 500
        # three messages per chat, two chats per bot: order within each chat matters
        msgs = [
            {"bot_id": b.id, "chat_id": 1000 + c, "text": f"{b.id}/{c}/{k}"}
            for k in range(3)
            for b in bots
            for c in range(2)
        ]
        emulator.state.inject(msgs)
        totals = await wait_replied(emulator, len(msgs), 120)
        assert daemon.proc.returncode is None
    assert totals["lost"] == 0
    assert totals["duplicates"] == 0
    assert totals["out_of_order"] == 0
    assert totals["telegram_429"] == 0
    assert totals["conflicts"] == 0
    sent = emulator.state.sent_log(bots[0].id)
    assert sent is not None
    assert [m["text"] for m in sent if m["chat_id"] == 1000] == [
        f"{bots[0].id}/0/{k}" for k in range(3)
    ]


async def test_sigkill_of_a_worker_loses_no_message_and_its_bots_poll_again(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(workers={"count": 2})
    bots = await register(settings, emulator, 100)
    async with start_daemon(
        settings, emulator.base_url, tmp_path, expect_warnings=("worker.died",)
    ) as daemon:
        victim = (await daemon.status())["workers"][0]
        victim_shards = set(victim["shards"])
        victim_bots = [b.id for b in bots if b.id % settings.workers.shards in victim_shards]
        assert victim_bots
        chats = iter(range(10_000, 10_000_000))
        before = [{"bot_id": b.id, "chat_id": next(chats), "text": "before"} for b in bots]
        emulator.state.inject(before)
        # kill while replies are still flowing
        async with asyncio.timeout(30):
            await emulator.state.wait_until(
                lambda: emulator.state.stats(False)["totals"]["replied"] >= len(before) // 4
            )
        killed_at = emulator.state.clock()
        os.kill(victim["pid"], signal.SIGKILL)
        during = [{"bot_id": b.id, "chat_id": next(chats), "text": "during"} for b in bots]
        emulator.state.inject(during)

        def polled_again() -> bool:
            return all((emulator.state.bots[i].last_poll_at or 0) > killed_at for i in victim_bots)

        async with asyncio.timeout(30):
            await emulator.state.wait_until(polled_again)
        repoll_s = max(emulator.state.bots[i].last_poll_at for i in victim_bots) - killed_at
        after = [{"bot_id": b.id, "chat_id": next(chats), "text": "after"} for b in bots]
        emulator.state.inject(after)
        total = len(before) + len(during) + len(after)
        totals = await wait_replied(emulator, total, 60)
        status = await daemon.status()
    print(
        f"victim bots polled again {repoll_s:.3f}s after SIGKILL; duplicates {totals['duplicates']}"
    )
    assert status["worker_restarts"] == 1
    assert totals["lost"] == 0
    # duplicates only for updates in flight at the kill: at most one batch per victim bot
    assert totals["duplicates"] <= len(victim_bots) * 2
    assert repoll_s < 10


def is_disabled(record: BotRecord | None) -> bool:
    return record is not None and record.state == BotState.DISABLED


async def test_revoked_token_disables_that_bot_only(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(workers={"count": 1})
    bots = await register(settings, emulator, 5)
    doomed, others = bots[0], bots[1:]
    async with start_daemon(settings, emulator.base_url, tmp_path) as daemon:
        emulator.state.revoke(doomed.id)
        async with open_registry(settings) as registry:
            async with asyncio.timeout(30):
                while not is_disabled(await registry.get(doomed.id)):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # a row written by another process: poll it
            rec = await registry.get(doomed.id)
            assert rec is not None
        assert "401" in (rec.disabled_reason or "")
        msgs = [{"bot_id": b.id, "chat_id": 5, "text": "still here"} for b in others]
        emulator.state.inject(msgs)
        await wait_replied(emulator, len(msgs), 30)
        status = await daemon.wait_status(
            lambda s: s["workers"][0]["bots_running"] == len(others) and s["ready"]
        )
        assert status["bots_by_state"]["disabled"] == 1
        assert status["workers"][0]["bots"]["disabled"] == 0  # stopped and forgotten
        assert doomed.token.split(":")[1] not in daemon.log_text()


async def test_sigterm_drains_in_flight_handlers_and_exits_zero(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    # short long polls: the emulator re-checks `wait_until` when a poll starts or ends,
    # and with the durable inbox a bot's poll stays parked while its handlers run
    settings = fresh_settings(
        workers={"count": 2}, shutdown={"grace_s": 20}, telegram={"poll_timeout_s": 1}
    )
    bots = await register(settings, emulator, 10)
    async with start_daemon(settings, emulator.base_url, tmp_path) as daemon:
        # per-chat limit 1/s: five messages to one chat keep each handler busy ~4 s
        msgs = [{"bot_id": b.id, "chat_id": 77, "text": f"m{k}"} for b in bots for k in range(5)]
        emulator.state.inject(msgs)

        # One inject, bots already long-polling: each poll returns all five of its chat.
        # Once every chat's first reply is out, the other 40 sit in per-chat queues.
        async with asyncio.timeout(30):
            await emulator.state.wait_until(
                lambda: emulator.state.stats(False)["totals"]["replied"] >= len(bots)
            )
        replied_at_term = emulator.state.stats(False)["totals"]["replied"]
        code = await daemon.stop(signal.SIGTERM)
        log = daemon.log_text()
    totals = emulator.state.stats(False)["totals"]
    assert replied_at_term < len(msgs)  # the drain really had work to finish
    assert code == 0
    assert totals["replied"] == len(msgs), log[-2000:]
    assert totals["lost"] == 0
    assert "drain_timeout" not in log


async def test_metrics_pass_promtool(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (make test installs it into tools/)"
    settings = fresh_settings(workers={"count": 2})
    bots = await register(settings, emulator, 4)
    async with start_daemon(settings, emulator.base_url, tmp_path) as daemon:
        emulator.state.inject([{"bot_id": b.id, "chat_id": 3, "text": "x"} for b in bots])
        await wait_replied(emulator, len(bots), 30)
        text = await daemon.wait_metrics("botvisor_messages_sent_total 4.0")
        ready_code, ready = await daemon.get("/readyz")
        health_code, _ = await daemon.get("/healthz")
    assert ready_code == 200 and health_code == 200, ready
    assert has_sample(text, 'botvisor_bots{state="running"} 4.0')
    assert "bot_id" not in text and bots[0].token not in text
    check = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(check.communicate(text.encode()), 30)
    assert check.returncode == 0, out.decode()
