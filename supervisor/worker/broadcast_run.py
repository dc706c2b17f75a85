"""One broadcast being sent by this worker: a feeder that talks to PostgreSQL and
`broadcasts.concurrency` lanes that send, so sending never pauses for a round trip.

Runs in the broadcast's own task (supervisor/worker/broadcaster.py starts it). The feeder
keeps up to `batch_max` chats claimed ahead of the lanes (those in flight included):
when fewer than half of that are queued it claims up to the bound again, and at least every second it writes the outcomes
so far and renews the lease (`BroadcastStore.step`). Lanes take chats from the queue and
send through the bot's limiter in its bulk lane (`BotApi.send_bulk`). At most
`batch_max` chats are claimed without a known outcome at any time: what a SIGKILL
can leave in doubt (see supervisor/registry/broadcasts.py).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import asyncpg
import structlog

from bots.telegram.api import BotApi
from bots.telegram.errors import BotNetworkError, Conflict, TelegramError, TokenRejected
from config.logthrottle import THROTTLE
from config.sections.messaging import BroadcastsSection
from supervisor.registry.broadcast_records import Outcome, Outcomes, Step
from supervisor.registry.broadcasts import BroadcastStore

log = structlog.get_logger(__name__)

#: Telegram's 403s that mean "this chat will not take messages": the chat is marked
#: blocked and left out of the next broadcasts.
BLOCKED_MARKS: Final = (
    "bot was blocked by the user",
    "user is deactivated",
    "bot was kicked from",
)
_DB_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
#: a stopping sender's last write waits at most this long (a drain must not hang on it)
RELEASE_TIMEOUT_S: Final = 1.0
#: outcomes are written and the lease renewed at least this often
STEP_EVERY_S: Final = 1.0


def outcome_of(exc: TelegramError | BotNetworkError) -> Outcome:
    if isinstance(exc, TelegramError) and exc.code == 403:
        if any(mark in exc.description for mark in BLOCKED_MARKS):
            return Outcome.BLOCKED
    return Outcome.FAILED


class BroadcastRun:
    """Runs in the broadcast's task. `api` answers the bot's client while the bot runs
    in this worker, else None."""

    def __init__(
        self,
        store: BroadcastStore,
        broadcast_id: int,
        runner: str,
        api: Callable[[], BotApi | None],
        settings: BroadcastsSection,
        message: dict[str, Any],
    ) -> None:
        self._store = store
        self._id = broadcast_id
        self._runner = runner
        self._api = api
        self._settings = settings
        self._message = message
        self._half = max(1, settings.batch_max // 2)
        self._queue: deque[int] = deque()  # claimed, not yet taken by a lane
        self._unresolved: set[int] = set()  # claimed, outcome not known yet
        self._granted: set[int] = set()  # of those, the ones whose request left
        self._done: dict[int, Outcome] = {}  # outcomes not yet written
        self._resolved = 0
        self._closed = False
        self.stop_reason = ""
        self._more = asyncio.Event()  # for lanes: chats queued, or closed
        self._low = asyncio.Event()  # for the feeder: the queue runs low
        self._log = log.bind(broadcast_id=broadcast_id)

    async def run(self) -> str:
        """Send until done, cancelled, or the bot leaves; returns why it stopped. On any
        exit (cancellation too) writes the outcomes, gives back the claims never sent
        and drops the lease, bounded by RELEASE_TIMEOUT_S."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._feed(), name=f"broadcast:{self._id}:feed")
                for n in range(self._settings.concurrency):
                    tg.create_task(self._lane(), name=f"broadcast:{self._id}:lane:{n}")
        finally:
            untried = [c for c in self._unresolved if c not in self._granted]
            await asyncio.shield(self._release(Outcomes(self._take(), untried)))
        return self.stop_reason

    def _take(self) -> dict[int, Outcome]:
        done, self._done = self._done, {}
        return done

    def _close(self, reason: str) -> None:
        """No more sends: queued chats stay unsent (given back at the end)."""
        if not self._closed:
            self._closed, self.stop_reason = True, reason
        self._queue.clear()
        self._more.set()

    async def _feed(self) -> None:
        last, rate = time.monotonic(), None
        while not self._closed:
            # never more than batch_max claimed without an outcome: the in-doubt bound
            room = self._settings.batch_max - len(self._unresolved)
            want = room if len(self._queue) < self._half else 0
            resolved, self._resolved = self._resolved, 0
            now = time.monotonic()
            if resolved:
                rate = round(resolved / max(now - last, 1e-3), 2)
            last = now
            step = await self._step(Outcomes(self._take()), want, rate)
            if step.stop:
                self._close(step.stop)
                return
            if step.claimed:
                self._queue.extend(step.claimed)
                self._unresolved.update(step.claimed)
                self._more.set()
            self._low.clear()
            try:
                async with asyncio.timeout(STEP_EVERY_S):
                    await self._low.wait()
            except TimeoutError:
                pass

    async def _step(self, outcomes: Outcomes, batch: int, rate: float | None) -> Step:
        """`BroadcastStore.step`, retried while PostgreSQL is away (outcomes kept)."""
        while True:
            try:
                return await self._store.step(
                    self._id,
                    self._runner,
                    outcomes,
                    batch=batch,
                    lease_s=self._settings.lease_s,
                    rate=rate,
                )
            except _DB_ERRORS as exc:
                THROTTLE.warning(self._log, "broadcast.step_failed", error=type(exc).__name__)
                await asyncio.sleep(STEP_EVERY_S)

    async def _lane(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._low.set()
                self._more.clear()
                await self._more.wait()
                continue
            chat_id = self._queue.popleft()
            if len(self._queue) < self._half:
                self._low.set()
            api = self._api()
            if api is None:
                self._queue.appendleft(chat_id)
                self._close("the bot stopped here")
                return
            await self._send_one(api, chat_id)

    async def _send_one(self, api: BotApi, chat_id: int) -> None:
        params = {"chat_id": chat_id, **self._message}
        granted = functools.partial(self._granted.add, chat_id)
        try:
            await api.send_bulk("sendMessage", params, chat_id, on_grant=granted)
        except (TokenRejected, Conflict) as exc:
            # the actor's own poll meets the same error and handles it; resumed later
            outcome = Outcome.FAILED
            self._close(f"the bot can no longer send ({exc.code})")
        except (TelegramError, BotNetworkError) as exc:
            outcome = outcome_of(exc)
        else:
            outcome = Outcome.SENT
        self._done[chat_id] = outcome
        self._unresolved.discard(chat_id)
        self._granted.discard(chat_id)
        self._resolved += 1
        if not self._queue:
            self._low.set()

    async def _release(self, outcomes: Outcomes) -> None:
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                await self._store.release(self._id, self._runner, outcomes)
        except _DB_ERRORS as exc:
            # the lease runs out and the next sender marks our claims unknown
            self._log.warning("broadcast.release_failed", error=type(exc).__name__)
