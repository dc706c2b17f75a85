"""The master's periodic chores for quotas and the audit log.

Runs in the master's event loop beside `Master.run()`: the audit writer (rows the admin
API queues), the usage sync (Redis ⇄ PostgreSQL, every `quotas.sync_interval_s`:
supervisor/registry/quotas.py) and audit pruning (rows older than
`audit.retention_days`, once an hour). A fault of PostgreSQL or Redis costs one INFO
line when it starts (the outage itself is reported by the services that need them) and
is tried again next tick; it never stops the master.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

import redis.asyncio as aioredis
import structlog

from config import Settings
from ipc.usage import UsageCounters, utc_day
from supervisor.failures import STORE_FAULTS
from supervisor.registry.audit import AuditLog, open_audit
from supervisor.registry.bots import Registry
from supervisor.registry.quotas import QuotaStore, sync_usage
from supervisor.worker.ticker import ticker

log = structlog.get_logger(__name__)

PRUNE_EVERY_S: Final = 3600.0
_FAULTS: Final = STORE_FAULTS


class Housekeeping:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        redis: aioredis.Redis,
        audit: AuditLog,
    ) -> None:
        #: the master's current settings: reload replaces them (run.py)
        self.settings = settings
        self._registry = registry
        self._redis = redis
        self.audit = audit
        self._pruned_at = -PRUNE_EVERY_S
        self._failing = False
        self._day = utc_day()

    async def run(self) -> None:
        """Runs as a task until cancelled."""
        async for now in ticker(self.settings.quotas.sync_interval_s):
            try:
                await self.tick(now)
            except _FAULTS as exc:
                if not self._failing:  # INFO: the outage has its WARNINGs elsewhere
                    log.info("housekeeping.failed", error=type(exc).__name__)
                self._failing = True
                continue
            if self._failing:
                log.info("housekeeping.recovered")
                self._failing = False

    async def tick(self, now: float) -> None:
        s = self.settings
        counters = UsageCounters(self._redis, s.redis.prefix, s.redis.timeout_s)
        store = QuotaStore(self._registry.pool, s.database.timeout_s)
        day = utc_day()
        if day != self._day:  # the last minutes of yesterday reach PostgreSQL too
            await sync_usage(store, counters, self._day)
            self._day = day
        await sync_usage(store, counters, day)
        if now - self._pruned_at >= PRUNE_EVERY_S:
            pruned = await self.audit.prune(s.audit.retention_days)
            self._pruned_at = now
            if pruned:
                log.info("audit.pruned", rows=pruned, retention_days=s.audit.retention_days)


@contextlib.asynccontextmanager
async def open_housekeeping(
    settings: Settings, registry: Registry, redis: aioredis.Redis
) -> AsyncIterator[Housekeeping]:
    """The chores running, with the master's audit log (`.audit`) and its writer."""
    async with open_audit(registry.pool, settings.database.timeout_s) as audit:
        chores = Housekeeping(settings, registry, redis, audit)
        task = asyncio.create_task(chores.run(), name="master:housekeeping")
        try:
            yield chores
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
