"""Webhook mode in the whole daemon: Telegram (the emulator) posts to the master's ingress,
the worker answers from the shard stream; bots switch polling <-> webhook under traffic
with no update lost, none answered twice and each chat in order."""

from __future__ import annotations

import asyncio
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
from supervisor.services import open_registry, publish_hint
from tests.daemon import free_port, start_daemon

pytestmark = pytest.mark.timeout(120)

CHATS = 4


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    policy = WebhookPolicy(retry_base_s=0.1, retry_max_s=0.5)
    async with open_emulator(rate_limits=False, webhook_policy=policy) as running:
        yield running


async def _traffic(emu: RunningEmulator, bots: list[BotState], rounds: int) -> None:
    """A message to every chat of every bot per round, a round every 20 ms."""
    for r in range(rounds):
        emu.state.inject(
            [
                {"bot_id": b.id, "chat_id": c, "text": f"r{r}"}
                for b in bots
                for c in range(1, CHATS + 1)
            ]
        )
        await asyncio.sleep(0.02)  # pacing of the load, not synchronisation


async def test_webhook_echo_and_live_mode_switches_lose_nothing(
    fresh_settings: Callable[..., Settings], emu: RunningEmulator, tmp_path: Path
) -> None:
    port = free_port()
    settings = fresh_settings(
        workers={"count": 1},
        ratelimit={
            "per_bot": {"limit": 10_000, "period_s": 1.0},
            "per_chat": {"limit": 1000, "period_s": 1.0},
        },
        telegram={"poll_timeout_s": 2},
        webhook={"public_url": f"http://127.0.0.1:{port}", "port": port, "max_connections": 8},
    )
    hooked, polled = emu.state.create_bots(2)
    async with open_registry(settings) as registry:
        await registry.add_many([(BotToken(b.token), f"u{b.id}") for b in (hooked, polled)])
        await registry.update(hooked.id, mode=BotMode.WEBHOOK)
        async with start_daemon(settings, emu.base_url, tmp_path) as daemon:
            async with asyncio.timeout(20):
                await emu.state.wait_until(lambda: bool(hooked.webhook_url))
            assert hooked.webhook_url == f"http://127.0.0.1:{port}/tg/{hooked.id}"
            assert hooked.webhook_secret and len(hooked.webhook_secret) >= 32

            # echo through the ingress
            await _traffic(emu, [hooked, polled], 5)
            async with asyncio.timeout(20):
                await emu.state.wait_until(lambda: emu.state.replied == emu.state.injected)
            assert emu.server.webhooks.stats.delivered >= 5 * CHATS
            assert emu.state.out_of_order == 0  # each chat answered in order

            # both switch the other way while messages keep coming
            load = asyncio.create_task(_traffic(emu, [hooked, polled], 60))
            await asyncio.sleep(0.3)  # let traffic flow in the old modes first
            await registry.update(hooked.id, mode=BotMode.POLLING)
            await registry.update(polled.id, mode=BotMode.WEBHOOK)
            await publish_hint(settings, (hooked.id, polled.id))
            await load
            async with asyncio.timeout(30):
                await emu.state.wait_until(
                    lambda: (
                        emu.state.replied == emu.state.injected
                        and bool(polled.webhook_url)
                        and not hooked.webhook_url
                    )
                )
            status, metrics = await daemon.get("/metrics")
            assert status == 200
    totals = emu.state.stats(False)["totals"]
    assert totals["injected"] == 65 * 2 * CHATS
    assert totals["lost"] == 0
    assert totals["duplicates"] == 0
    # each chat in order across both switches: entries parked while an actor restarts are
    # offered before newer ones read as it starts (supervisor/worker/inbox_reader.py)
    assert totals["out_of_order"] == 0
    accepted = re.search(
        r'botvisor_webhook_requests_total\{[^}]*result="accepted"[^}]*\} (\S+)', str(metrics)
    )
    assert accepted is not None and float(accepted.group(1)) > 0
