"""Degraded mode of the context store: noticing Redis is down, probing it, and replaying
the writes held in memory once it answers (see `context.pending`). A base class of
`ContextStore`, kept apart so each file stays readable."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import structlog

from context.aio import KeyedLocks, wait_first
from context.pending import PendingChat, ReplayContended, replay
from context.redis_io import REDIS_DOWN, RedisContexts
from context.stats import Counters, StoreConfig

if TYPE_CHECKING:
    from context.lru import ChatCache

log = structlog.get_logger(__name__)

#: Replays running at once when Redis comes back.
REPLAY_CONCURRENCY: Final = 32


class RedisRecovery:
    """The store's Redis-down bookkeeping; `ContextStore` sets every attribute below."""

    config: StoreConfig
    changed: asyncio.Event
    _redis: RedisContexts
    _locks: KeyedLocks[tuple[int, int]]
    _pending: dict[tuple[int, int], PendingChat]
    _pending_changes: int
    _redis_down: bool
    _recovery_wake: asyncio.Event
    _c: Counters

    def cache_for(self, bot_id: int) -> ChatCache:
        raise NotImplementedError

    @property
    def redis_down(self) -> bool:
        return self._redis_down

    def redis_failed(self, exc: BaseException) -> None:
        """Another user of the worker's Redis (the heartbeat) saw it fail: serve from
        memory and let the recovery task probe it, so health says so at once. Logged at
        info: that user has already warned about the outage."""
        self._mark_redis_down(exc, noticed_by="heartbeat")

    def _mark_redis_down(self, exc: BaseException, noticed_by: str = "") -> None:
        self._c.redis_errors += 1
        if not self._redis_down:
            if noticed_by:
                log.info("context.redis_degraded", error=type(exc).__name__, by=noticed_by)
            else:
                log.warning("context.redis_degraded", error=type(exc).__name__)
            self._redis_down = True
            self._recovery_wake.set()
            self._changed()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def recover_forever(self, stop: asyncio.Event) -> None:
        """Background task: while Redis is down, probe it; once it answers, replay."""
        delay = 0.05
        while not stop.is_set():
            if not (self._redis_down or self._pending):
                self._recovery_wake.clear()
                await wait_first(self._recovery_wake, stop)
                continue
            if await self.replay_pending():
                delay = 0.05
                continue
            await wait_first(stop, timeout=delay)
            delay = min(delay * 2, 1.0)

    async def replay_pending(self) -> bool:
        """One recovery pass. True once Redis is up and nothing is pending any more.

        Redis counts as up as soon as it answers: chats with nothing queued write to it
        directly again, chats with queued writes keep queuing until their own replay
        (under the chat's lock) has run, so per chat the order is kept and the queue
        only shrinks — a steady stream of writes cannot keep recovery from finishing.
        """
        try:
            async with asyncio.timeout(self.config.redis_timeout_s):
                await self._redis.ping()
        except REDIS_DOWN:
            return False
        if self._redis_down:
            self._redis_down = False
            log.info("context.redis_recovered", pending_chats=len(self._pending))
            self._changed()
        gate = asyncio.Semaphore(REPLAY_CONCURRENCY)
        while self._pending and not self._redis_down:
            results = await asyncio.gather(
                *(self._replay_one(key, gate) for key in list(self._pending))
            )
            if not all(results):
                return False
            if not self._pending:
                log.info("context.replayed")
                self._changed()
        return not self._pending and not self._redis_down

    async def _replay_one(self, key: tuple[int, int], gate: asyncio.Semaphore) -> bool:
        async with gate, self._locks.hold(key):
            pending = self._pending.get(key)
            if pending is None:
                return True
            try:
                async with asyncio.timeout(self.config.redis_timeout_s):
                    ctx = await replay(self._redis, pending, self.config.max_messages)
            except REDIS_DOWN as exc:
                self._mark_redis_down(exc)
                return False
            except ReplayContended:
                log.warning("context.replay_contended", bot_id=key[0], chat_id=key[1])
                return False
            del self._pending[key]
            self._pending_changes -= len(pending.changes)
            self.cache_for(key[0]).put(ctx)
            return True
