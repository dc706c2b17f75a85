"""The worker-wide cap on queued updates pauses polls and drops nothing (real Fleet,
Bot API emulator)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bots.actor.dispatch import ChatDispatcher
from bots.actor.queue_budget import QueueBudget
from bots.actor.spec import BotSpec
from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import open_emulator
from supervisor.worker.fleet import Fleet
from supervisor.worker.plan import Plan
from tests.botapi import open_pools


class WatchedBudget(QueueBudget):
    """Signals when `paused` polls are waiting and when the count is back to zero."""

    def __init__(self, max_queued: int, paused: int) -> None:
        super().__init__(max_queued)
        self._want = paused
        self.all_paused = asyncio.Event()
        self.empty = asyncio.Event()

    def add(self, n: int) -> None:
        super().add(n)
        if self.queued == 0:
            self.empty.set()

    async def wait_room(self) -> None:
        if self.full() and self.pauses + 1 >= self._want:
            self.all_paused.set()
        await super().wait_room()


async def test_a_full_worker_pauses_every_poll_then_answers_everything(
    settings_factory: Callable[..., Settings],
) -> None:
    async def on_disabled(bot_id: int, reason: str) -> None:
        raise AssertionError(f"bot {bot_id} disabled: {reason}")

    async with open_emulator() as emu, open_pools() as session:
        bots = emu.state.create_bots(4)
        settings = settings_factory(
            telegram={"api_base": emu.base_url, "poll_timeout_s": 1},
            bots={"queued_max_worker": 5},
        )
        fleet = Fleet(settings, session, on_disabled)
        queue = fleet.bounds.queue = ChatDispatcher.budget = WatchedBudget(5, paused=4)
        queue.add(5)  # the worker is full (other bots' updates still in handlers)
        emu.state.inject(
            [{"bot_id": b.id, "chat_id": 1000 + i, "text": "ping"} for b in bots for i in range(10)]
        )
        specs = [BotSpec(b.id, BotToken(b.token), "echo", {}, 1) for b in bots]
        await fleet.apply(Plan(start=specs))
        try:
            async with asyncio.timeout(20):
                await queue.all_paused.wait()
            # every bot is parked before its first getUpdates: Telegram keeps the updates
            assert all(emu.state.bots[b.id].get_updates == 0 for b in bots)
            assert emu.state.stats(False)["totals"]["replied"] == 0
            assert queue.pauses == 4
            queue.add(-5)  # room again
            async with asyncio.timeout(30):
                await emu.state.wait_until(
                    lambda: emu.state.stats(False)["totals"]["replied"] == 40
                )
                if queue.queued:  # the last handlers' bookkeeping after their reply
                    queue.empty.clear()
                    await queue.empty.wait()
            fleet.harvest()
            assert fleet.totals.dropped == 0 and fleet.totals.handled == 40
        finally:
            await fleet.stop_all()
            ChatDispatcher.budget = None
