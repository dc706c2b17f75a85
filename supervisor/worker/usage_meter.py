"""The worker's `UsageGate` (bots/handlers/metering.py): quotas checked in memory, usage
counted in Redis in batches.

Runs in a worker's event loop. Per update: one dict lookup for the bot's owner, one for
the owner's limits, one sum; no PostgreSQL query and no Redis round trip. What it reads:

* a bot's owner: told by the reconciler from the rows it reads anyway (`know_owner`), else
  from `bots`, once per bot per `OWNER_TTL_S` (a bot keeps its owner), the misses of
  `OWNER_BATCH_S` in one query: a burst to 5,000 bots not heard from yet made 5,000
  queries through the worker's few PostgreSQL connections, and replies waited;
* an owner's limits: `[quotas]` and `owner_quotas`, once per owner per `LIMITS_TTL_S`, so
  a new quota applies within that time (one query however many of its bots ask at once);
* today's totals (every worker's): returned by the flush that adds this worker's counts,
  every `FLUSH_S` (one pipelined round trip, ipc/usage.py).

Faults fail open: a PostgreSQL or Redis outage never stops a bot from answering (a
lookup waits at most `LOOKUP_S`, and is not tried again for `RETRY_S`). The counts of a
failed flush are kept for the next one; the first fault logs one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import asyncpg
import redis.asyncio as aioredis
import structlog

from config import Settings
from ipc.usage import Usage, UsageCounters, UsageKind, utc_day
from supervisor.failures import STORE_FAULTS
from supervisor.registry.quotas import Quota, QuotaStore, defaults, quota_name
from supervisor.worker.ticker import ticker

log = structlog.get_logger(__name__)

OWNER_TTL_S: Final = 3600.0
LIMITS_TTL_S: Final = 30.0
FLUSH_S: Final = 1.0
#: a lookup waits at most this long (a handler waits for it), and after a failed one the
#: bot or owner is not looked up again for RETRY_S: an outage delays an update once, briefly
LOOKUP_S: Final = 1.0
RETRY_S: Final = 10.0
#: owner lookups missed within this window share one query
OWNER_BATCH_S: Final = 0.005
_FAULTS: Final = STORE_FAULTS

Key = tuple[int, str]  # (owner id, UTC day)


#: indexes of the counts in the hot path's lists (plain ints: an Enum hashes in Python)
_MESSAGES, _TOKENS = 0, 1
_KINDS: Final = (UsageKind.MESSAGES, UsageKind.LLM_TOKENS)


class UsageMeter:
    def __init__(
        self, redis: aioredis.Redis, pool: asyncpg.Pool, settings: Callable[[], Settings]
    ) -> None:
        """`settings` returns the worker's current settings (they change on reload)."""
        s = settings()
        self._settings = settings
        self._counters = UsageCounters(redis, s.redis.prefix, s.redis.timeout_s)
        self._pool = pool
        self._owners: dict[int, tuple[int | None, float]] = {}
        #: owner lookups waiting or in flight, the bots of the next batch, running batches
        self._owner_loads: dict[int, asyncio.Future[int | None]] = {}
        self._owner_batch: list[int] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._limits: dict[int, tuple[Quota, float]] = {}
        self._quota_loads: dict[int, asyncio.Task[Quota]] = {}
        #: queries made for owners and for limits (tests, benches)
        self.owner_queries = self.quota_queries = 0
        #: every worker's counts as of the last flush; ours since: [messages, llm tokens]
        self._totals: dict[Key, tuple[int, int]] = {}
        self._pending: dict[Key, list[int]] = {}
        self._watched: set[Key] = set()
        self._told: set[tuple[int, int, str]] = set()
        self._failing = False
        self._day: tuple[int, str] = (-1, "")  # (days since the epoch, YYYYMMDD)

    @property
    def fallback_text(self) -> str:
        return self._settings().quotas.fallback_text

    def _today(self) -> str:
        """The UTC day, formatted once a day rather than once an update."""
        number = int(time.time() // 86_400)
        if number != self._day[0]:
            self._day = (number, utc_day())
        return self._day[1]

    def know_owner(self, bot_id: int, owner_id: int | None) -> None:
        """The reconciler read the bot's row: its owner needs no query (a bot's first
        update after a start otherwise waited for one)."""
        self._owners[bot_id] = (owner_id, time.monotonic())

    # -- UsageGate -----------------------------------------------------------------------

    async def admit_message(self, bot_id: int) -> bool:
        """Runs in the chat's task. Awaits only on a cache miss."""
        now = time.monotonic()
        known = self._owners.get(bot_id)
        fresh = known is not None and now - known[1] < OWNER_TTL_S
        owner_id = known[0] if fresh and known is not None else await self._load_owner(bot_id)
        if owner_id is None:
            return True  # the admin's bots have no quota
        key = (owner_id, self._today())
        limits = self._limits.get(owner_id)
        if limits is None or now - limits[1] >= LIMITS_TTL_S:
            quota = await self._load_quota(owner_id)
        else:
            quota = limits[0]
        if not self._within(quota.messages_per_day, key, _MESSAGES):
            return False
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = [0, 0]
        pending[_MESSAGES] += 1
        return True

    async def llm_allowed(self, bot_id: int) -> bool:
        """Runs in the chat's task."""
        owner_id = await self._owner(bot_id)
        if owner_id is None:
            return True
        quota = await self._quota(owner_id)
        return self._within(quota.llm_tokens_per_day, (owner_id, self._today()), _TOKENS)

    def count_llm_tokens(self, bot_id: int, tokens: int) -> None:
        known = self._owners.get(bot_id)
        if known is None or known[0] is None or tokens <= 0:
            return  # unknown here means llm_allowed failed open: the admin's or unreadable
        key = (known[0], self._today())
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = [0, 0]
        pending[_TOKENS] += tokens

    # -- reading and writing -------------------------------------------------------------

    def used(self, owner_id: int, kind: UsageKind, day: str) -> int:
        """Every worker's count as of the last flush, plus ours since."""
        return self._used((owner_id, day), _KINDS.index(kind))

    def _used(self, key: Key, index: int) -> int:
        total = self._totals.get(key)
        pending = self._pending.get(key)
        return (total[index] if total else 0) + (pending[index] if pending else 0)

    def _within(self, limit: int, key: Key, index: int) -> bool:
        self._watched.add(key)
        if limit == 0 or self._used(key, index) < limit:
            return True
        told = (key[0], index, key[1])
        if told not in self._told:  # one line per owner, kind and day
            self._told.add(told)
            name = quota_name(_KINDS[index])
            log.info("quota.exceeded", owner_id=key[0], quota=name, limit=limit)
        return False

    async def _owner(self, bot_id: int) -> int | None:
        known = self._owners.get(bot_id)
        if known is not None and time.monotonic() - known[1] < OWNER_TTL_S:
            return known[0]
        return await self._load_owner(bot_id)

    async def _load_owner(self, bot_id: int) -> int | None:
        """Joins the next batch (or the one in flight for this bot); fails open."""
        waiting = self._owner_loads.get(bot_id)
        if waiting is None:
            waiting = self._owner_loads[bot_id] = asyncio.get_running_loop().create_future()
            if not self._owner_batch:
                task = asyncio.create_task(self._load_owners(), name="usage:owners")
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
            self._owner_batch.append(bot_id)
        # shielded: one waiter's cancel must not fail the others of its batch
        return await asyncio.shield(waiting)

    async def _load_owners(self) -> None:
        """One query for the owners missed within OWNER_BATCH_S."""
        ids: list[int] = []
        owners = self._owners
        try:
            await asyncio.sleep(OWNER_BATCH_S)
            ids, self._owner_batch = self._owner_batch, []
            self.owner_queries += 1
            async with asyncio.timeout(LOOKUP_S):  # the pool's acquire included
                rows = await self._pool.fetch(
                    "SELECT id, owner_id FROM bots WHERE id = ANY($1::bigint[])", ids
                )
            found = {r["id"]: r["owner_id"] for r in rows}
            now = time.monotonic()
            for bot_id in ids:
                value = found.get(bot_id)
                owners[bot_id] = (None if value is None else int(value), now)
        except _FAULTS as exc:
            self._fault("owner", exc)
            retry_at = time.monotonic() - OWNER_TTL_S + RETRY_S
            for bot_id in ids:
                known = owners.get(bot_id)
                owners[bot_id] = (None if known is None else known[0], retry_at)
        finally:  # cancelled too: every waiter gets an answer (what is known, else none)
            if not ids:  # cancelled while gathering
                ids, self._owner_batch = self._owner_batch, []
            for bot_id in ids:
                waiting = self._owner_loads.pop(bot_id, None)
                if waiting is not None and not waiting.done():
                    known = owners.get(bot_id)
                    waiting.set_result(None if known is None else known[0])

    async def _quota(self, owner_id: int) -> Quota:
        known = self._limits.get(owner_id)
        if known is not None and time.monotonic() - known[1] < LIMITS_TTL_S:
            return known[0]
        return await self._load_quota(owner_id)

    async def _load_quota(self, owner_id: int) -> Quota:
        """One query per owner however many of its bots miss at once."""
        task = self._quota_loads.get(owner_id)
        if task is None:
            task = self._quota_loads[owner_id] = asyncio.create_task(
                self._fetch_quota(owner_id), name="usage:quota"
            )
            task.add_done_callback(lambda _: self._quota_loads.pop(owner_id, None))
        return await asyncio.shield(task)

    async def _fetch_quota(self, owner_id: int) -> Quota:
        self.quota_queries += 1
        known = self._limits.get(owner_id)
        s = self._settings()
        try:
            async with asyncio.timeout(LOOKUP_S):
                quota = await QuotaStore(self._pool, LOOKUP_S).quota(s, owner_id)
        except _FAULTS as exc:
            self._fault("limits", exc)
            quota = defaults(s) if known is None else known[0]
            self._limits[owner_id] = (quota, time.monotonic() - LIMITS_TTL_S + RETRY_S)
            return quota
        self._limits[owner_id] = (quota, time.monotonic())
        return quota

    async def flush(self) -> None:
        """Add our counts in Redis and learn every worker's totals; on a fault keep them."""
        pending, self._pending = self._pending, {}
        deltas = {
            k: {kind: v[i] for i, kind in enumerate(_KINDS) if v[i]}
            for k, v in pending.items()
            if any(v)
        }
        watched, self._watched = self._watched - set(deltas), set()
        try:
            fresh: dict[Key, Usage] = {}
            if deltas:
                fresh.update(await self._counters.add(deltas))
            for day in {d for _, d in watched}:
                owners = [o for o, d in watched if d == day]
                read = await self._counters.read(owners, day)
                fresh.update({(o, day): u for o, u in read.items()})
        except _FAULTS as exc:
            self._fault("flush", exc)
            for key, counts in pending.items():  # kept for the next flush
                mine = self._pending.setdefault(key, [0, 0])
                mine[0] += counts[0]
                mine[1] += counts[1]
            return
        self._totals.update({k: (u.messages, u.llm_tokens) for k, u in fresh.items()})
        today = self._today()
        self._totals = {k: v for k, v in self._totals.items() if k[1] >= today}
        self._told = {t for t in self._told if t[2] >= today}
        if self._failing:
            log.info("usage.recovered")
            self._failing = False

    def _fault(self, op: str, exc: BaseException) -> None:
        # INFO: the outage itself is reported (WARNING) by the reconciler, the context store
        # and the heartbeat; metering only fails open meanwhile
        if not self._failing:
            log.info("usage.unavailable", op=op, error=type(exc).__name__)
        self._failing = True

    async def aclose(self) -> None:
        """Cancel the lookups in flight (their waiters get what is known)."""
        tasks = [*self._batches, *self._quota_loads.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self) -> None:
        """Runs as a task until cancelled; the last counts get one more flush (bounded)."""
        try:
            async for _ in ticker(FLUSH_S):
                await self.flush()
        finally:
            with contextlib.suppress(*_FAULTS):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(self.flush())


@contextlib.asynccontextmanager
async def open_usage_meter(
    redis: aioredis.Redis, pool: asyncpg.Pool, settings: Callable[[], Settings]
) -> AsyncIterator[UsageMeter]:
    """A meter with its flusher running; at exit the last counts are flushed."""
    meter = UsageMeter(redis, pool, settings)
    task = asyncio.create_task(meter.run(), name="worker:usage")
    try:
        yield meter
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await meter.aclose()
