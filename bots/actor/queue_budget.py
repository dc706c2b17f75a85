"""The worker-wide cap on updates received and not yet handled (`bots.queued_max_worker`).

Every bot's `ChatDispatcher` (bots/actor/dispatch.py) counts against the one budget; the
worker's polls wait for room (supervisor/worker/bounds.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bots.telegram.update import Incoming


class QueueBudget:
    """The worker-wide count of updates received and not yet handled, against a cap.

    Nothing is ever dropped: past the cap, polls wait (`wait_room`, see
    supervisor/worker/bounds.py) so Telegram keeps the updates until there is room.
    """

    __slots__ = ("_room", "max_queued", "pauses", "queued")

    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        self.queued = 0
        #: polls that had to wait for room
        self.pauses = 0
        self._room: asyncio.Event | None = None  # created while someone waits

    def full(self) -> bool:
        return self.queued >= self.max_queued

    def add(self, n: int) -> None:
        self.queued += n
        room = self._room
        if room is not None and self.queued < self.max_queued:
            self._room = None  # waiters still over the cap after waking wait on a new one
            room.set()

    def release_of(self, queue: deque[Incoming]) -> Callable[[asyncio.Task[None]], None]:
        """A done callback: what a chat task left unhandled no longer counts."""

        def release(_: asyncio.Task[None]) -> None:
            if queue:
                self.add(-len(queue))

        return release

    async def wait_room(self) -> None:
        if self.full():
            self.pauses += 1
        while self.full():
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()
