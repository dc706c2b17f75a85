"""Two hosts on one PostgreSQL and one Redis: separate masters with their own host ids,
HTTP ports and state dirs; shard leases split the bots between them, and a SIGKILLed
host's bots move to the other within the lease TTL."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from tests.daemon import Daemon, start_daemon
from tests.e2e.test_daemon_e2e import register, wait_replied

pytestmark = pytest.mark.timeout(120)

SHARDS = 8
#: every host of a cluster decrypts the same tokens: one key for all
KEY = base64.b64encode(secrets.token_bytes(32)).decode()
LEASES = {"ttl_s": 3.0, "renew_s": 0.5, "margin_s": 1.0}


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


def host_settings(make: Callable[..., Settings], tmp: Path, host: str) -> Settings:
    return make(
        host={"id": host},
        state={"dir": str(tmp / host)},
        workers={"count": 1, "shards": SHARDS},
        leases=LEASES,
        security={"encryption_key": KEY},
    )


def split(status: dict[str, Any]) -> dict[str, list[int]]:
    return {h["host"]: h["shards"] for h in status["hosts"] or [] if h["alive"]}


async def test_two_hosts_split_the_shards_and_a_killed_hosts_bots_move_within_the_ttl(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    a_settings = host_settings(fresh_settings, tmp_path, "host-a")
    b_settings = host_settings(fresh_settings, tmp_path, "host-b")
    bots = await register(a_settings, emulator, 200)
    chats = iter(range(10_000, 10_000_000))

    def inject(text: str) -> int:
        msgs = [{"bot_id": b.id, "chat_id": next(chats), "text": text} for b in bots]
        emulator.state.inject(msgs)
        return len(msgs)

    async with (
        start_daemon(a_settings, emulator.base_url, tmp_path) as a,
        start_daemon(b_settings, emulator.base_url, tmp_path) as b,
    ):
        # b joined after a took every shard: a hands half over, b takes them
        def balanced(d: dict[str, Any]) -> bool:
            held = split(d)
            return sorted(len(v) for v in held.values()) == [SHARDS // 2] * 2 and d["ready"]

        status = await b.wait_status(balanced, timeout=20)
        held = split(status)
        assert sorted(s for v in held.values() for s in v) == list(range(SHARDS))  # disjoint
        await a.wait_status(lambda d: d["ready"] and len(d["shards"]) == SHARDS // 2)
        # each host's /metrics is about itself, and says which host it is
        assert 'botvisor_workers{host="host-b"} 1.0' in await b.wait_metrics('host="host-b"')
        emulator.state.reset_stats()
        total = inject("steady")
        totals = await wait_replied(emulator, total, 30)
        assert totals["conflicts"] == 0  # every bot polled by exactly one host
        assert totals["duplicates"] == 0

        victims = [x.id for x in bots if x.id % SHARDS in set(held["host-a"])]
        assert victims
        await kill_host(a)
        killed_at = emulator.state.clock()
        total += inject("during")

        def moved() -> bool:
            return all((emulator.state.bots[i].last_poll_at or 0) > killed_at for i in victims)

        async with asyncio.timeout(LEASES["ttl_s"] + 10):
            await emulator.state.wait_until(moved)
        moved_s = max(emulator.state.bots[i].last_poll_at or 0 for i in victims) - killed_at
        totals = await wait_replied(emulator, total, 30)
        status = await b.wait_status(lambda d: len(d["shards"]) == SHARDS)
    print(f"{len(victims)} bots of the killed host polled on the other after {moved_s:.2f} s")
    assert moved_s < LEASES["ttl_s"] + 2
    assert totals["lost"] == 0
    # only updates in flight at the kill come twice: at most one batch per victim bot
    assert totals["duplicates"] <= len(victims)


async def kill_host(daemon: Daemon) -> None:
    """SIGKILL the host's whole process tree: its workers first, then the master."""
    status = await daemon.status()
    for worker in status["workers"]:
        if worker["pid"] is not None:
            os.kill(worker["pid"], signal.SIGKILL)
    os.kill(daemon.proc.pid, signal.SIGKILL)
    await daemon.proc.wait()
