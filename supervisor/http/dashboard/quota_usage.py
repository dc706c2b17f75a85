"""An owner's quota usage for the bots page: bots, messages today, LLM tokens today.

Runs in the master's event loop; the same owner report as `GET /v1/owners/{id}` and
`botvisor owners show` (supervisor/registry/quotas.py). The admin has no quota: None.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from ipc.usage import UsageCounters
from supervisor.http.common import AdminContext
from supervisor.registry.owners import Caller
from supervisor.registry.quotas import owner_report, to_date

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class UsageLine:
    name: str
    used: int
    #: 0: unlimited
    limit: int

    @property
    def percent(self) -> int:
        """How full, for the meter (0 when unlimited)."""
        return min(100, self.used * 100 // self.limit) if self.limit else 0


async def quota_usage(ctx: AdminContext, caller: Caller) -> tuple[str, list[UsageLine]] | None:
    """(the UTC day, a line per quota) for an owner; None for the admin."""
    if caller.owner_id is None:
        return None
    counters = None
    if ctx.redis is not None:
        s = ctx.settings.redis
        counters = UsageCounters(ctx.redis, s.prefix, s.timeout_s)
    try:
        report = await owner_report(ctx.registry, ctx.settings, counters, caller.owner_id)
    except (aioredis.RedisError, TimeoutError, OSError) as exc:
        if counters is None:
            raise
        # Redis away: today's figures as PostgreSQL last synced them (the page stays up)
        log.info("dashboard.usage_from_postgres", error=type(exc).__name__)
        report = await owner_report(ctx.registry, ctx.settings, None, caller.owner_id)
    if report is None:  # removed while logged in
        return None
    q, u = report.quota, report.usage
    return to_date(report.day).isoformat(), [
        UsageLine("Bots", report.bots, q.bots),
        UsageLine("Messages today", u.messages, q.messages_per_day),
        UsageLine("LLM tokens today", u.llm_tokens, q.llm_tokens_per_day),
    ]
