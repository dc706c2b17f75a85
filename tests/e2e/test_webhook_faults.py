"""Webhook mode through a Redis outage: the ingress cannot queue, answers 503 with
Retry-After, Telegram (the emulator) retries, and once Redis is back every update is
answered exactly once, each chat in order.

Redis is reached through a TCP proxy whose stop cuts every connection and refuses new
ones: the data survives (an unreachable Redis, not a wiped one), as in a network split.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.bots import BotState
from emulators.telegram.server import RunningEmulator, open_emulator
from emulators.telegram.webhooks import WebhookPolicy
from supervisor.registry.bot_records import BotMode
from supervisor.services import open_registry
from tests.context_helpers import TcpProxy, redis_address, redis_via_proxy
from tests.daemon import free_port, start_daemon

pytestmark = pytest.mark.timeout(90)

BOTS = 8
CHATS = 4
#: Retry-After of the ingress's 503s: short, so the test stays short
RETRY_AFTER_S = 1


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    # without Retry-After the emulator would retry after 0.1 s; the ingress says 1 s
    policy = WebhookPolicy(retry_base_s=0.1, retry_max_s=0.5)
    async with open_emulator(rate_limits=False, webhook_policy=policy) as running:
        yield running


@contextlib.asynccontextmanager
async def traffic(emu: RunningEmulator, bots: list[BotState]) -> AsyncIterator[list[int]]:
    """A message to every chat of every bot every 50 ms; yields [rounds so far]."""
    rounds = [0]

    async def run() -> None:
        while True:
            emu.state.inject(
                [
                    {"bot_id": b.id, "chat_id": c, "text": f"r{rounds[0]}"}
                    for b in bots
                    for c in range(1, CHATS + 1)
                ]
            )
            rounds[0] += 1
            await asyncio.sleep(0.05)  # pacing of the load, not synchronisation

    task = asyncio.create_task(run(), name="test:traffic")
    try:
        yield rounds
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_redis_unreachable_during_webhook_traffic_loses_nothing_and_answers_once(
    fresh_settings: Callable[..., Settings], emu: RunningEmulator, tmp_path: Path
) -> None:
    base = fresh_settings()
    assert base.redis.url is not None
    proxy = TcpProxy(redis_address(base.redis.url))
    await proxy.start()
    port = free_port()
    settings = fresh_settings(
        workers={"count": 1},
        redis={"url": redis_via_proxy(base.redis.url, proxy.port), "timeout_s": 1.0},
        ratelimit={
            "per_bot": {"limit": 10_000, "period_s": 1.0},
            "per_chat": {"limit": 1000, "period_s": 1.0},
        },
        webhook={
            "public_url": f"http://127.0.0.1:{port}",
            "port": port,
            "retry_after_s": RETRY_AFTER_S,
        },
    )
    bots = emu.state.create_bots(BOTS)
    stats = emu.server.webhooks.stats
    try:
        async with open_registry(settings) as registry:
            await registry.add_many([(BotToken(b.token), f"u{b.id}") for b in bots])
            for b in bots:
                await registry.update(b.id, mode=BotMode.WEBHOOK)
        async with start_daemon(
            settings,
            emu.base_url,
            tmp_path,
            expect_warnings=(
                "webhook.queue_unavailable",
                "heartbeat.redis_unavailable",
                "control.redis_unavailable",
                "progress.save_failed",
                "inbox.read_failed",
                "inbox.ack_failed",
            ),
        ) as daemon:
            async with asyncio.timeout(20):
                await emu.state.wait_until(lambda: all(b.webhook_url for b in bots))
            async with traffic(emu, bots) as rounds:
                try:
                    async with asyncio.timeout(10):
                        await emu.state.wait_until(lambda: emu.state.replied >= BOTS * CHATS * 5)
                    await proxy.stop()  # Redis unreachable
                    refused = stats.by_status.get(503, 0)
                    async with asyncio.timeout(10):
                        # every chat refused about twice: over a second of outage
                        await emu.server.webhooks.wait_until(
                            lambda: stats.by_status.get(503, 0) >= refused + 2 * BOTS * CHATS
                        )
                    held = emu.state.injected - emu.state.replied
                finally:
                    if not proxy.running:
                        await proxy.start()  # back, same port (also when the test failed)
                after = rounds[0]
                async with asyncio.timeout(10):
                    await emu.state.wait_until(lambda: rounds[0] >= after + 10)
            async with asyncio.timeout(20):
                await emu.state.wait_until(lambda: emu.state.replied == emu.state.injected)
            _, metrics = await daemon.get("/metrics")
    finally:
        async with asyncio.timeout(10):  # bounded: a stuck pipe must not hang the run
            await proxy.stop()
    totals = emu.state.stats(False)["totals"]
    assert held > 0  # updates really waited at Telegram through the outage
    # every refusal was a 503 carrying Retry-After, and the emulator waited for it
    assert set(stats.by_status) == {200, 503}
    assert stats.retry_after_honoured == stats.by_status[503] >= 2 * BOTS * CHATS
    unavailable = re.search(
        r'botvisor_webhook_requests_total\{[^}]*result="unavailable"[^}]*\} (\S+)', str(metrics)
    )
    assert unavailable is not None and float(unavailable.group(1)) >= 2 * BOTS * CHATS
    assert totals["lost"] == 0
    assert totals["duplicates"] == 0
    assert totals["out_of_order"] == 0
    assert stats.dropped == 0
