"""The worker's `UsageGate` (bots/handlers/metering.py): quotas checked in memory, usage
counted in Redis in batches.

Runs in a worker's event loop. Per update: one dict lookup for the bot's owner, one for
the owner's limits, one sum; no PostgreSQL query and no Redis round trip. What it reads:

* a bot's owner: from `bots`, once per bot per `OWNER_TTL_S` (a bot keeps its owner);
* an owner's limits: `[quotas]` and `owner_quotas`, once per owner per `LIMITS_TTL_S`, so
  a new quota applies within that time;
* today's totals (every worker's): returned by the flush that adds this worker's counts,
  every `FLUSH_S` (one pipelined round trip, ipc/usage.py).

Faults fail open: a PostgreSQL or Redis outage never stops a bot from answering. The
counts of a failed flush are kept for the next one; the first fault logs one warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Final

import asyncpg
import redis.asyncio as aioredis
import structlog

from config import Settings
from ipc.usage import Usage, UsageCounters, UsageKind, utc_day
from supervisor.registry.quotas import Quota, QuotaStore, defaults, quota_name
from supervisor.worker.ticker import ticker

log = structlog.get_logger(__name__)

OWNER_TTL_S: Final = 3600.0
LIMITS_TTL_S: Final = 30.0
FLUSH_S: Final = 1.0
_FAULTS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    aioredis.RedisError,
    OSError,
    TimeoutError,
)

Key = tuple[int, str]  # (owner id, UTC day)


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
        self._limits: dict[int, tuple[Quota, float]] = {}
        self._totals: dict[Key, Usage] = {}
        self._pending: defaultdict[Key, defaultdict[UsageKind, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._watched: set[Key] = set()
        self._told: set[tuple[int, UsageKind, str]] = set()
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

    # -- UsageGate -----------------------------------------------------------------------

    async def admit_message(self, bot_id: int) -> bool:
        """Runs in the chat's task."""
        owner_id = await self._owner(bot_id)
        if owner_id is None:
            return True  # the admin's bots have no quota
        if not await self._allows(owner_id, UsageKind.MESSAGES):
            return False
        self._pending[(owner_id, self._today())][UsageKind.MESSAGES] += 1
        return True

    async def llm_allowed(self, bot_id: int) -> bool:
        """Runs in the chat's task."""
        owner_id = await self._owner(bot_id)
        return owner_id is None or await self._allows(owner_id, UsageKind.LLM_TOKENS)

    def count_llm_tokens(self, bot_id: int, tokens: int) -> None:
        known = self._owners.get(bot_id)
        if known is None or known[0] is None or tokens <= 0:
            return  # unknown here means llm_allowed failed open: the admin's or unreadable
        self._pending[(known[0], self._today())][UsageKind.LLM_TOKENS] += tokens

    # -- reading and writing -------------------------------------------------------------

    def used(self, owner_id: int, kind: UsageKind, day: str) -> int:
        """Every worker's count as of the last flush, plus ours since."""
        key = (owner_id, day)
        base = self._totals.get(key, Usage()).of(kind)
        pending = self._pending.get(key)
        return base + (pending.get(kind, 0) if pending else 0)

    async def _allows(self, owner_id: int, kind: UsageKind) -> bool:
        quota = await self._quota(owner_id)
        day = self._today()
        self._watched.add((owner_id, day))
        if quota.allows(kind, self.used(owner_id, kind, day)):
            return True
        if (owner_id, kind, day) not in self._told:  # one line per owner, kind and day
            self._told.add((owner_id, kind, day))
            limit = quota.per_day(kind)
            log.info("quota.exceeded", owner_id=owner_id, quota=quota_name(kind), limit=limit)
        return False

    async def _owner(self, bot_id: int) -> int | None:
        now = time.monotonic()
        known = self._owners.get(bot_id)
        if known is not None and now - known[1] < OWNER_TTL_S:
            return known[0]
        try:
            value = await self._pool.fetchval(
                "SELECT owner_id FROM bots WHERE id = $1",
                bot_id,
                timeout=self._settings().database.timeout_s,
            )
        except _FAULTS as exc:
            self._fault("owner", exc)
            return None if known is None else known[0]
        owner_id = None if value is None else int(value)
        self._owners[bot_id] = (owner_id, now)
        return owner_id

    async def _quota(self, owner_id: int) -> Quota:
        now = time.monotonic()
        known = self._limits.get(owner_id)
        if known is not None and now - known[1] < LIMITS_TTL_S:
            return known[0]
        s = self._settings()
        try:
            quota = await QuotaStore(self._pool, s.database.timeout_s).quota(s, owner_id)
        except _FAULTS as exc:
            self._fault("limits", exc)
            return defaults(s) if known is None else known[0]
        self._limits[owner_id] = (quota, now)
        return quota

    async def flush(self) -> None:
        """Add our counts in Redis and learn every worker's totals; on a fault keep them."""
        deltas = {k: dict(v) for k, v in self._pending.items() if v}
        self._pending.clear()
        watched, self._watched = self._watched - set(deltas), set()
        try:
            if deltas:
                self._totals.update(await self._counters.add(deltas))
            for day in {d for _, d in watched}:
                owners = [o for o, d in watched if d == day]
                read = await self._counters.read(owners, day)
                self._totals.update({(o, day): u for o, u in read.items()})
        except _FAULTS as exc:
            self._fault("flush", exc)
            for key, counts in deltas.items():
                for kind, n in counts.items():
                    self._pending[key][kind] += n
            return
        today = self._today()
        self._totals = {k: v for k, v in self._totals.items() if k[1] >= today}
        self._told = {t for t in self._told if t[2] >= today}
        if self._failing:
            log.info("usage.recovered")
            self._failing = False

    def _fault(self, op: str, exc: BaseException) -> None:
        if not self._failing:
            log.warning("usage.unavailable", op=op, error=type(exc).__name__)
        self._failing = True

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
