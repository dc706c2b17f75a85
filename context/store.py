"""The context store of one worker: per-bot LRU -> Redis -> PostgreSQL.

One store per worker process (one Redis client, one asyncpg pool), one `ChatCache`
per bot inside it, so a busy bot only ever evicts its own chats, and a restarted
actor finds its cache warm. Runs in the worker's event loop.

* `load` serves memory, else Redis unless PostgreSQL holds a newer change of the chat
  (`chat_state.stamp` later than the time in Redis's version token: writes a worker
  queued while Redis was away and then exited with), else rebuilds the chat from
  PostgreSQL: messages from `messages`, dialog and prefs from `chat_state`.
* `save` applies `Changes` on the freshest state it has and writes it with a
  compare-and-set; a stale write is retried on the state Redis returns, never
  written over it. Writes of one chat in this process queue on a lock, so only
  other processes ever race.
* Redis down: reads are served from memory (or PostgreSQL), writes are applied in
  memory and queued per chat; a recovery task replays them once Redis answers.
* Every write also queues its history rows and, when it touches dialog or prefs, the
  chat's new state for PostgreSQL (the source of truth); closing flushes them.
* PostgreSQL down: they stay queued and are retried (see `DurableLog`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

from context.aio import KeyedLocks
from context.durable import PG_DOWN, ChatState, DurableLog
from context.lru import CacheBudget, ChatCache
from context.model import EMPTY, RESET_ROLE, Changes, Context, Message, apply_changes, now_ts
from context.pending import ALL, PendingChat
from context.recovery import RedisRecovery
from context.redis_io import REDIS_DOWN, RedisContexts, new_version, version_stamp
from context.stats import ContextStatistics, Counters, StoreConfig

log = structlog.get_logger(__name__)

#: A save that loses this many compare-and-set races in a row gives up.
SAVE_ATTEMPTS: Final = 100
#: How long a load waits for the chat's `chat_state` row (is Redis stale? any history?).
STALE_CHECK_TIMEOUT_S: Final = 2.0


class ContextUnavailable(Exception):
    """The write cannot be kept: Redis is down and the in-memory queue is full, or
    other writers won every attempt."""


class ContextStore(RedisRecovery):
    def __init__(self, redis: RedisContexts, durable: DurableLog, config: StoreConfig) -> None:
        self.config = config
        self._redis = redis
        self._durable = durable
        self._caches: dict[int, ChatCache] = {}
        #: the worker-wide byte cap over every bot's cache
        self.cache_budget = CacheBudget(config.cache_bytes_worker)
        self._locks: KeyedLocks[tuple[int, int]] = KeyedLocks()
        self._pending: dict[tuple[int, int], PendingChat] = {}
        self._pending_changes = 0
        self._redis_down = False
        self._rebuild_failing = False
        self._recovery_wake = asyncio.Event()
        self._c = Counters()
        self.changed = asyncio.Event()  # set (and replaced) on every health change
        durable.on_change = self._changed

    # -- public API -----------------------------------------------------------------------

    async def load(self, bot_id: int, chat_id: int) -> Context:
        """Runs in the chat's task. Never raises for Redis or PostgreSQL trouble."""
        pending = self._pending.get((bot_id, chat_id))
        if pending is not None:
            self._c.memory_hits += 1
            return pending.ctx
        cache = self.cache_for(bot_id)
        ctx = cache.get(chat_id)
        if ctx is not None:
            self._c.memory_hits += 1
            return ctx
        self._c.memory_misses += 1
        ctx = await self._fetch(bot_id, chat_id)
        cache.put(ctx)
        return ctx

    async def save(self, bot_id: int, chat_id: int, changes: Changes) -> Context:
        """Apply `changes` atomically and return the context as written.

        Runs in the chat's task. Raises ContextUnavailable only when the write cannot
        be kept at all; Redis or PostgreSQL being down is not such a case.
        """
        key = (bot_id, chat_id)
        async with self._locks.hold(key):
            if self._redis_down or key in self._pending:
                return await self._save_in_memory(key, changes)
            base = self.cache_for(bot_id).get(chat_id) or await self._fetch(bot_id, chat_id)
            if self._redis_down:  # found out while fetching
                return await self._save_in_memory(key, changes, base)
            for attempt in range(SAVE_ATTEMPTS):
                if attempt:
                    # Jittered backoff: without it the fastest writer process wins every
                    # round and a slow one can lose a hundred in a row (seen with 8 stores).
                    await asyncio.sleep(random.uniform(0, min(0.02, 0.0005 * 2**attempt)))  # noqa: S311
                new = apply_changes(base, changes, self.config.max_messages)
                token = new_version()
                try:
                    async with asyncio.timeout(self.config.redis_timeout_s):
                        ok, fresh = await self._redis.write(
                            base.version, new, ALL if not base.version else changes.touches, token
                        )
                except REDIS_DOWN as exc:
                    self._mark_redis_down(exc)
                    self._pending[key] = PendingChat(new, base.version, token, [changes])
                    return self._accept(key, new, changes, queued=True)
                if ok:
                    return self._accept(key, fresh, changes)
                self._c.conflicts += 1
                base = fresh if fresh.version else await self._rebuild(bot_id, chat_id, base)
            raise ContextUnavailable(f"bot {bot_id} chat {chat_id}: too many concurrent writers")

    def cache_for(self, bot_id: int) -> ChatCache:
        cache = self._caches.get(bot_id)
        if cache is None:
            c = self.config
            cache = self._caches[bot_id] = ChatCache(
                c.cache_entries, c.cache_bytes, c.cache_ttl_s, budget=self.cache_budget
            )
        return cache

    def forget_bot(self, bot_id: int) -> None:
        """The bot left this worker: free its cache (queued writes stay until replayed)."""
        cache = self._caches.pop(bot_id, None)
        if cache is not None:
            cache.clear()  # uncharge the worker's budget

    def health(self) -> dict[str, Any]:
        """Which layer is degraded, for /readyz and /v1/status (via heartbeats)."""
        pg_down = self._durable.degraded or self._rebuild_failing
        if self._redis_down:
            redis = "degraded"
        else:
            redis = "recovering" if self._pending else "ok"
        return {
            "redis": redis,
            "postgres": "degraded" if pg_down else "ok",
            "pending_redis_writes": self._pending_changes,
            "pending_durable_writes": len(self._durable),
        }

    def statistics(self) -> ContextStatistics:
        caches = [c.statistics() for c in self._caches.values()]
        d = self._durable
        return self._c.freeze(
            pending_redis_chats=len(self._pending),
            pending_redis_writes=self._pending_changes,
            durable_queued=len(d),
            durable_written=d.written,
            durable_dropped=d.dropped,
            postgres_errors=self._c.rebuild_errors + d.errors,
            cached_chats=sum(c.entries for c in caches),
            cached_bytes=sum(c.bytes for c in caches),
            evictions=sum(c.evictions + c.expirations for c in caches),
        )

    async def handed_off_chats(
        self, bot_id: int, limit: int = 100
    ) -> list[tuple[int, Mapping[str, Any], float]]:
        """The bot's chats under operator handoff, from PostgreSQL: (chat id, mark, time of
        the chat's newest change), newest first. Raises what PostgreSQL raises."""
        return await self._durable.handed_off(bot_id, limit, self.config.dialog_ttl_s)

    async def wait_durable(self, timeout: float) -> bool:
        """Wait until every history row queued so far is in PostgreSQL (False: timed out)."""
        return await self._durable.wait_idle(timeout)

    async def wait_health(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Return the health dict once `predicate` holds (checked on every change)."""
        while not predicate(health := self.health()):
            await self.changed.wait()
        return health

    # -- reading --------------------------------------------------------------------------

    async def _fetch(self, bot_id: int, chat_id: int) -> Context:
        """The freshest context this store can get without raising.

        Redis and PostgreSQL's `chat_state` row are read at once (one round trip, not
        two in a row): the row says whether Redis is stale and, for a chat with no row
        and nothing queued, that PostgreSQL holds nothing for it (a new chat: no history
        query either; migration 0010 gave every chat with history its row)."""
        durable = self._durable
        check = not (durable.degraded or self._rebuild_failing)
        queued = durable.has_pending(bot_id, chat_id)  # before the query: see `_new_chat`
        row = (
            asyncio.create_task(self._state_or_error(bot_id, chat_id), name="context:state")
            if check
            else None
        )
        try:
            ctx: Context | None = None
            if not self._redis_down:
                try:
                    async with asyncio.timeout(self.config.redis_timeout_s):
                        ctx = await self._redis.fetch(bot_id, chat_id)
                except REDIS_DOWN as exc:
                    self._mark_redis_down(exc)
            state = await row if row is not None else None
        finally:
            if row is not None and not row.done():
                row.cancel()  # we were cancelled: the query is nobody's any more
        stale = ""
        if ctx is not None and ctx.version:
            if not self._older_than_durable(ctx, state):
                self._c.redis_hits += 1
                return ctx
            stale = ctx.version
        elif ctx is not None:
            self._c.redis_misses += 1
        if not stale and self._new_chat(bot_id, chat_id, state, queued):
            self._c.postgres_misses += 1
            return Context(bot_id, chat_id)
        rebuilt = await self._rebuild(bot_id, chat_id, None, state)
        if (rebuilt.empty and not stale) or self._redis_down:
            return rebuilt
        # put it back, so other readers (a restarted actor, another worker) find it there
        try:
            async with asyncio.timeout(self.config.redis_timeout_s):
                _, stored = await self._redis.write(stale, rebuilt, ALL, new_version())
        except REDIS_DOWN as exc:
            self._mark_redis_down(exc)
            return rebuilt
        return stored  # ours, or what a writer stored meanwhile

    async def _state_or_error(self, bot_id: int, chat_id: int) -> ChatState | BaseException:
        try:
            return await self._durable.state(bot_id, chat_id, STALE_CHECK_TIMEOUT_S)
        except PG_DOWN as exc:
            return exc

    def _new_chat(
        self, bot_id: int, chat_id: int, state: ChatState | BaseException | None, queued: bool
    ) -> bool:
        """PostgreSQL has no row for the chat and nothing of it was queued before or
        after the query (a batch committing meanwhile was queued before it, or its row
        is in the answer): there is no history to read."""
        return (
            isinstance(state, ChatState)
            and state.stamp == 0
            and not queued
            and not self._durable.has_pending(bot_id, chat_id)
        )

    def _older_than_durable(self, ctx: Context, state: ChatState | BaseException | None) -> bool:
        """Whether PostgreSQL holds a change of the chat newer than Redis's copy. With
        PostgreSQL away (or not asked: degraded) Redis is trusted (the best there is)."""
        if state is None:
            return False
        if isinstance(state, BaseException):
            self._c.rebuild_errors += 1
            return False
        if state.stamp <= version_stamp(ctx.version):
            return False
        self._c.stale_redis += 1
        log.info("context.redis_stale", bot_id=ctx.bot_id, chat_id=ctx.chat_id)
        return True

    async def _rebuild(
        self,
        bot_id: int,
        chat_id: int,
        fallback: Context | None,
        state: ChatState | BaseException | None = None,
    ) -> Context:
        """The chat from PostgreSQL plus what is still queued for it; version "" (not in
        Redis). Dialog and prefs: `chat_state` (lapsed by their TTLs since the chat's
        last change; `state` if the caller read it already, or how reading it failed),
        else what memory had (`fallback`).

        With PostgreSQL down too: `fallback` (what memory had) or an empty context.
        """
        c = self.config
        queued = self._durable.pending_state(bot_id, chat_id)
        try:
            if isinstance(state, BaseException):
                raise state  # the caller's read of the row failed: PostgreSQL is away
            messages = await self._durable.recent(bot_id, chat_id, c.max_messages, c.messages_ttl_s)
            if state is None:
                state = await self._durable.state(bot_id, chat_id)
        except PG_DOWN as exc:
            self._c.rebuild_errors += 1
            if not self._rebuild_failing:
                log.warning("context.rebuild_failed", error=type(exc).__name__, bot_id=bot_id)
                self._rebuild_failing = True
                self._changed()
            if fallback is not None:
                return Context(
                    bot_id, chat_id, "", fallback.dialog, fallback.messages, fallback.prefs
                )
            return Context(bot_id, chat_id)
        if self._rebuild_failing:
            self._rebuild_failing = False
            self._changed()
        if messages:
            self._c.postgres_hits += 1
        else:
            self._c.postgres_misses += 1
        state = state.newer(queued).newer(self._durable.pending_state(bot_id, chat_id))
        dialog, prefs = (
            (fallback.dialog, fallback.prefs) if fallback is not None else (EMPTY, EMPTY)
        )
        if state.state_stamp:
            age = now_ts() - state.stamp
            dialog = _frozen(state.dialog) if age < c.dialog_ttl_s else EMPTY
            prefs = _frozen(state.prefs) if age < c.prefs_ttl_s else EMPTY
        return Context(bot_id, chat_id, "", dialog, messages, prefs)

    # -- writing --------------------------------------------------------------------------

    def _accept(
        self, key: tuple[int, int], ctx: Context, changes: Changes, *, queued: bool = False
    ) -> Context:
        """A write is decided: cache it, queue its history rows for PostgreSQL."""
        self.cache_for(key[0]).put(ctx)
        self._c.saves += 1
        if queued:
            self._pending_changes += 1
            self._changed()
        rows = changes.append
        if changes.reset:
            rows = (Message(RESET_ROLE, "", rows[0].ts if rows else now_ts()), *rows)
        if rows:
            self._durable.enqueue_nowait(key[0], key[1], rows)
        if changes.reset or changes.dialog_set or changes.dialog_clear or changes.prefs_set:
            # the time Redis got (or, queued, will get a later one): PostgreSQL never
            # looks newer than a Redis copy that has this write
            stamp = version_stamp(ctx.version) if not queued else now_ts()
            stamp = max(stamp, *(m.ts for m in rows)) if rows else stamp
            self._durable.enqueue_state_nowait(
                key[0], key[1], ChatState(stamp, stamp, ctx.dialog, ctx.prefs)
            )
        return ctx

    async def _save_in_memory(
        self, key: tuple[int, int], changes: Changes, base: Context | None = None
    ) -> Context:
        if self._pending_changes >= self.config.pending_max:
            raise ContextUnavailable(
                f"Redis is down and {self._pending_changes} writes are already queued in memory"
            )
        pending = self._pending.get(key)
        if pending is None:
            if base is None:
                base = self.cache_for(key[0]).get(key[1]) or await self._fetch(*key)
            pending = self._pending[key] = PendingChat(base, base.version)
        pending.ctx = apply_changes(pending.ctx, changes, self.config.max_messages)
        pending.changes.append(changes)
        self._recovery_wake.set()
        return self._accept(key, pending.ctx, changes, queued=True)


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    from types import MappingProxyType

    return MappingProxyType(dict(value)) if value else EMPTY
