"""The worker's broadcast sender: sends the broadcasts of the bots this worker runs.

Runs in the worker's event loop; `run` is a must-live service. Every
`broadcasts.scan_interval_s` it looks for active broadcasts no live sender holds and
starts one task per broadcast of a bot running here; a task whose bot stopped here (paused,
removed, moved to another worker) is cancelled and gives its broadcast back.

A task loops over `BroadcastStore.step` (record outcomes, renew the lease, claim the next
`broadcasts.batch_max` chats) and sends the claimed chats through the bot's own limiter
in its bulk lane (`BotApi.send_bulk`): at the highest rate the bot's limits allow, and
after every reply. The per-chat at-most-once boundary is in supervisor/registry/broadcasts.py.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import asyncpg
import structlog

from bots.actor.actor import ActorState
from bots.actor.supervise import BotHandle
from bots.telegram.api import BotApi, BotNetworkError, Conflict, TelegramError, TokenRejected
from config import Settings
from config.logthrottle import THROTTLE
from supervisor.registry.broadcasts import BroadcastStore, Outcome, Outcomes, Step
from supervisor.worker.ticker import ticker

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
_RELEASE_TIMEOUT_S: Final = 1.0


def outcome_of(exc: TelegramError | BotNetworkError) -> Outcome:
    if isinstance(exc, TelegramError) and exc.code == 403:
        if any(mark in exc.description for mark in BLOCKED_MARKS):
            return Outcome.BLOCKED
    return Outcome.FAILED


class _BotGone(Exception):
    """The bot's token died or another poller took it: stop, resume when it runs again."""


class Broadcaster:
    """Runs in the worker's event loop."""

    def __init__(
        self,
        store: BroadcastStore,
        handles: Mapping[int, BotHandle],
        settings: Callable[[], Settings],
    ) -> None:
        self._store = store
        self._handles = handles
        self._settings = settings
        self._prefix = f"{socket.gethostname()}:{os.getpid()}"
        self._seq = itertools.count(1)
        #: broadcast id -> (bot id, its sending task)
        self._tasks: dict[int, tuple[int, asyncio.Task[None]]] = {}

    def _running(self, bot_id: int) -> BotHandle | None:
        handle = self._handles.get(bot_id)
        if handle is None or handle.actor.state is not ActorState.RUNNING:
            return None
        return handle

    async def run(self) -> None:
        try:
            async for _ in ticker(self._settings().broadcasts.scan_interval_s):
                await self.scan()
        finally:
            await self.stop()

    async def scan(self) -> None:
        """Stop senders whose bot left, start senders for broadcasts of bots here."""
        for bot_id, task in list(self._tasks.values()):
            if self._running(bot_id) is None:
                task.cancel(msg="bot stopped here")
        try:
            found = await self._store.runnable()
        except _DB_ERRORS as exc:
            THROTTLE.warning(log, "broadcast.scan_failed", error=type(exc).__name__)
            return
        for broadcast_id, bot_id in found:
            if broadcast_id in self._tasks or self._running(bot_id) is None:
                continue
            # a fresh runner id per run: a crashed run's lease is never mistaken for ours
            runner = f"{self._prefix}:{next(self._seq)}"
            task = asyncio.create_task(
                self._send(broadcast_id, bot_id, runner), name=f"bot:{bot_id}:broadcast"
            )
            self._tasks[broadcast_id] = (bot_id, task)
            task.add_done_callback(functools.partial(self._done, broadcast_id))

    def _done(self, broadcast_id: int, task: asyncio.Task[None]) -> None:
        entry = self._tasks.get(broadcast_id)
        if entry is not None and entry[1] is task:
            del self._tasks[broadcast_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("broadcast.crashed", broadcast_id=broadcast_id, error=repr(task.exception()))

    async def stop(self) -> None:
        """Cancel every sender; each gives its broadcast back (bounded) before it ends."""
        tasks = [task for _, task in self._tasks.values()]
        for task in tasks:
            task.cancel(msg="worker draining")
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_stopped(self, broadcast_id: int) -> None:
        """Until this worker's sender of the broadcast (if any) has ended (tests, drain)."""
        entry = self._tasks.get(broadcast_id)
        if entry is not None:
            await asyncio.gather(entry[1], return_exceptions=True)

    def statistics(self) -> dict[str, int]:
        return {"broadcasts_sending": len(self._tasks)}

    # -- one broadcast --------------------------------------------------------------------

    async def _send(self, broadcast_id: int, bot_id: int, runner: str) -> None:
        """Runs in the broadcast's own task until it is done, cancelled or its bot leaves."""
        blog = log.bind(bot_id=bot_id, broadcast_id=broadcast_id)
        record = await self._store.get(bot_id, broadcast_id)
        if record is None:
            return
        message = record.message()
        outcomes = Outcomes()
        claimed: list[int] = []
        granted: set[int] = set()
        rate: float | None = None
        last = time.monotonic()
        blog.info("broadcast.sending", total=record.total, resumed=record.started_at is not None)
        try:
            while True:
                step = await self._step(broadcast_id, runner, outcomes, rate)
                outcomes, claimed = Outcomes(), step.claimed
                granted.clear()
                if step.stop:
                    blog.info("broadcast.stopped", reason=step.stop)
                    return
                handle = self._running(bot_id)
                if handle is None:
                    return  # the finally gives the claims back
                if not await self._send_batch(
                    handle.actor.api, message, claimed, outcomes, granted
                ):
                    return  # token dead or bot taken: resumed when it runs here again
                now = time.monotonic()
                if outcomes.done:
                    rate = round(len(outcomes.done) / max(now - last, 1e-3), 2)
                last = now
        finally:
            # never tried: given back; tried without an answer: left claimed (in doubt)
            outcomes.untried = [c for c in claimed if c not in granted]
            await asyncio.shield(self._release(broadcast_id, runner, outcomes, blog))

    async def _step(
        self, broadcast_id: int, runner: str, outcomes: Outcomes, rate: float | None
    ) -> Step:
        """`BroadcastStore.step`, retried while PostgreSQL is away (outcomes kept)."""
        b = self._settings().broadcasts
        while True:
            try:
                return await self._store.step(
                    broadcast_id, runner, outcomes, batch=b.batch_max, lease_s=b.lease_s, rate=rate
                )
            except _DB_ERRORS as exc:
                THROTTLE.warning(
                    log,
                    "broadcast.step_failed",
                    broadcast_id=broadcast_id,
                    error=type(exc).__name__,
                )
                await asyncio.sleep(1.0)

    async def _release(self, broadcast_id: int, runner: str, outcomes: Outcomes, blog: Any) -> None:
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT_S):
                await self._store.release(broadcast_id, runner, outcomes)
        except _DB_ERRORS as exc:
            # the lease runs out and the next sender marks our claims unknown
            blog.warning("broadcast.release_failed", error=type(exc).__name__)

    async def _send_batch(
        self,
        api: BotApi,
        message: dict[str, Any],
        chats: list[int],
        outcomes: Outcomes,
        granted: set[int],
    ) -> bool:
        """Send to `chats` with `broadcasts.concurrency` requests in flight; False if the
        bot can no longer send (401/409)."""
        todo = iter(chats)

        async def lane() -> None:
            for chat_id in todo:
                params = {"chat_id": chat_id, **message}
                try:
                    await api.send_bulk(
                        "sendMessage",
                        params,
                        chat_id,
                        on_grant=functools.partial(granted.add, chat_id),
                    )
                except (TokenRejected, Conflict) as exc:
                    outcomes.done[chat_id] = Outcome.FAILED
                    raise _BotGone(str(exc)) from None
                except (TelegramError, BotNetworkError) as exc:
                    outcomes.done[chat_id] = outcome_of(exc)
                else:
                    outcomes.done[chat_id] = Outcome.SENT

        lanes = min(self._settings().broadcasts.concurrency, len(chats))
        gone = False
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(lanes):
                    tg.create_task(lane())
        except* _BotGone:
            gone = True  # the actor's own poll meets the same error and handles it
        return not gone
