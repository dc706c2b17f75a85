"""Per-chat ordered handling for one bot, and the offset watermark that confirms updates.

Updates of one chat run one after another; chats run in parallel. An update is
confirmed to Telegram (the next getUpdates offset passes it) only once it has been
handled, so a process killed mid-way loses nothing: Telegram hands the unconfirmed
updates to the next poller. Re-delivered ones this process already has are dropped.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from bots.actor.answered_ids import AnsweredIds
from bots.actor.queue_budget import QueueBudget
from bots.telegram.update import Incoming
from ipc.offsets import BotProgress

if TYPE_CHECKING:
    from bots.actor.stats import ActorStats

log = structlog.get_logger(__name__)


class ChatDispatcher(AnsweredIds):
    """Runs in the actor's tasks. One per actor run."""

    #: the worker's budget (set by the worker's Fleet); every dispatcher counts against it
    budget: ClassVar[QueueBudget | None] = None

    def __init__(
        self,
        bot_id: int,
        handle: Callable[[Incoming], Awaitable[None]],
        stats: ActorStats,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        self._budget = ChatDispatcher.budget
        self._bot_id = bot_id
        self._handle = handle
        self._on_finished = on_finished
        # answered by an earlier poller above its watermark: skipped if re-delivered
        self._skip: frozenset[int] | None = None
        self._chats: dict[int, deque[Incoming]] = {}
        # Unconfirmed update ids, oldest first, from _head on: a list with a head index
        # costs an idle bot 56 bytes where an empty deque costs 760.
        self._arrival: list[int] = []
        self._head = 0
        # handled but not yet confirmed; both sets exist only while there is traffic
        self._done: set[int] | None = None
        self._max_seen = -1
        self._tasks: set[asyncio.Task[None]] | None = None
        self._progress: asyncio.Future[None] | None = None  # created only while waited on
        self._finished = 0
        self._stats = stats
        # inbox mode (bots/actor/inbox_mode.py): entries arrive out of order after a
        # claim; until the floor is lifted every answered id is kept (`_answered`)
        self._floor: int | None = None
        self._answered: set[int] | None = None
        self._on_done: dict[int, list[Callable[[], None]]] | None = None
        self._trusted: set[int] | None = None  # see `trust`

    def submit(self, updates: list[dict[str, Any]]) -> int:
        """Queue new updates; returns how many were new. Never blocks."""
        fresh = 0
        now = time.perf_counter()
        for raw in updates:
            update_id = raw.get("update_id")
            if not isinstance(update_id, int) or update_id <= self._max_seen:
                # re-delivered while unconfirmed: already queued or done
                self._stats.duplicates += 1
                continue
            self._max_seen = update_id
            self._arrival.append(update_id)
            if self._skip and update_id in self._skip:
                # answered before a restart or a shard move: confirm it, answer nothing
                self._stats.duplicates += 1
                if self._done is None:
                    self._done = set()
                self._done.add(update_id)
                continue
            self._queue(Incoming(raw, now))
            fresh += 1
        self._stats.received += fresh
        if self._budget is not None and fresh:
            self._budget.add(fresh)
        return fresh

    def trust(self, update_ids: Iterable[int]) -> None:
        """Telegram never delivered these before (a webhook left them undelivered): when
        offered, an id below the floor is not taken for answered; answered ids still are."""
        if self._trusted is None:
            self._trusted = set()
        self._trusted.update(update_ids)

    def offer(self, raw: dict[str, Any], on_done: Callable[[], None], received: float) -> str:
        """An update from the inbox, in any order: "new" (queued; `on_done` runs once it
        is handled), "queued" (already in hand: `on_done` runs with it) or "done"
        (answered already: acknowledge it now)."""
        update_id = raw.get("update_id")
        if not isinstance(update_id, int):
            return "done"
        if self._answered is None:
            self._answered = set()
            self._floor = self._max_seen + 1 if self._floor is None else self._floor
        floor = self._floor if self._floor is not None else -1
        arrival, head = self._arrival, self._head
        i = bisect.bisect_left(arrival, update_id, head)
        if i < len(arrival) and arrival[i] == update_id:
            if self._done and update_id in self._done:
                self._stats.duplicates += 1
                return "done"
            if self._on_done is None:
                self._on_done = {}
            self._on_done.setdefault(update_id, []).append(on_done)
            return "queued"
        below = (
            update_id < floor
            if self._floor is not None
            else (update_id < (arrival[head] if head < len(arrival) else self._max_seen + 1))
        )
        trusted = self._trusted
        if trusted and update_id in trusted:
            trusted.discard(update_id)
            below = False
        old = self._answered_old
        if (
            below
            or update_id in self._answered
            or (old is not None and update_id in old)
            or (self._skip and update_id in self._skip)
        ):
            self._stats.duplicates += 1
            return "done"
        arrival.insert(i, update_id)
        self._max_seen = max(self._max_seen, update_id)
        if self._on_done is None:
            self._on_done = {}
        self._on_done[update_id] = [on_done]
        self._queue(Incoming(raw, received))
        self._stats.received += 1
        if self._budget is not None:
            self._budget.add(1)
        return "new"

    def _queue(self, update: Incoming) -> None:
        queue = self._chats.get(update.chat_id)
        if queue is not None:
            queue.append(update)
            return
        queue = self._chats[update.chat_id] = deque()
        queue.append(update)
        task = asyncio.create_task(
            self._run_chat(update.chat_id, queue),
            name=f"bot:{self._bot_id}:chat:{update.chat_id}",
        )
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._budget is not None:
            task.add_done_callback(self._budget.release_of(queue))

    def start_at(self, offset: int, answered: frozenset[int] = frozenset()) -> None:
        """Updates below `offset`, and those in `answered`, were handled by an earlier
        poller: drop them if Telegram sends them again."""
        self._max_seen = max(self._max_seen, offset - 1)
        self._skip = frozenset(i for i in answered if i >= offset) or None
        self._floor = offset

    def record(self) -> BotProgress | None:
        """What a later poller needs: the watermark and the ids answered above it."""
        watermark = self.watermark()
        if self._floor is not None and self._answered is not None:
            watermark = self._floor if watermark is None else min(watermark, self._floor)
        if watermark is None:
            return None
        answered = frozenset(self._done or ()) | (self._skip or frozenset())
        if self._answered:
            answered |= self._answered
        if self._answered_old:
            answered |= self._answered_old
        return BotProgress(watermark, frozenset(i for i in answered if i >= watermark))

    def inflight(self) -> int:
        """Updates received and not yet handled."""
        return len(self._arrival) - self._head - (len(self._done) if self._done else 0)

    def watermark(self) -> int | None:
        """The getUpdates offset: the oldest unhandled update, else one past the newest."""
        arrival, done, head = self._arrival, self._done, self._head
        while done and head < len(arrival) and arrival[head] in done:
            done.discard(arrival[head])
            head += 1
        if done is not None and not done:
            self._done = None
        if head == len(arrival):
            arrival.clear()
            head = 0
        elif head > 64:
            del arrival[:head]
            head = 0
        self._head = head
        if arrival:
            return arrival[head]
        return self._max_seen + 1 if self._max_seen >= 0 else None

    def progress(self) -> int:
        """A mark for `wait_progress`: how many updates have finished so far."""
        return self._finished

    async def wait_progress(self, since: int) -> None:
        """Wait until an update finishes after mark `since` (at once if one already has)."""
        while self._finished == since:
            if self._progress is None or self._progress.done():
                self._progress = asyncio.get_running_loop().create_future()
            await self._progress

    async def wait_idle(self, timeout: float) -> None:
        """Wait until nothing is in flight, at most `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while self.inflight():
                    await self.wait_progress(self._finished)
        except TimeoutError:
            pass

    async def drain(self, timeout: float) -> bool:
        """Let in-flight handlers finish up to `timeout`, then cancel the rest.

        Returns True when everything finished. Cancelled updates stay unconfirmed.
        """
        tasks = list(self._tasks or ())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel(msg="drain timeout")
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                return False
        return True

    async def _run_chat(self, chat_id: int, queue: deque[Incoming]) -> None:
        try:
            while queue:
                update = queue[0]
                try:
                    await self._handle(update)
                except Exception:
                    # the handle wrapper logs and classifies; this is a last guard
                    log.exception("update.handler_crashed", bot_id=self._bot_id)
                queue.popleft()
                if self._budget is not None:
                    self._budget.add(-1)
                if self._done is None:
                    self._done = set()
                self._done.add(update.update_id)
                if self._answered is not None:
                    if self._floor is not None:
                        self._answer(update.update_id)
                    callbacks = self._on_done.pop(update.update_id, ()) if self._on_done else ()
                    for callback in callbacks:
                        callback()
                self._finished += 1
                if self._on_finished is not None:
                    self._on_finished()
                waiter = self._progress
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        finally:
            if self._chats.get(chat_id) is queue:
                del self._chats[chat_id]
