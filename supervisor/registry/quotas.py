"""Quotas per owner: bots, messages per UTC day, LLM tokens per UTC day.

Runs in any process with a pool. Limits are the `[quotas]` defaults overridden per owner
by the admin (table `owner_quotas`, migration 0008): an override of NULL means "the
default", 0 means unlimited, N means at most N. Usage is counted in Redis
(ipc/usage.py) by the workers; `sync_usage` (the master, every `quotas.sync_interval_s`)
copies each owner's figures of the day to `owner_usage` and, where Redis lost a key
(a restart without persistence), adds PostgreSQL's figures back first, so a restart
forgets at most one interval of counting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

import asyncpg

from config import Settings
from ipc.usage import Usage, UsageCounters, UsageKind, utc_day
from supervisor.registry.bots import Registry

#: The names of the quota kinds, as the API, the CLI and errors spell them.
BOTS: Final = "bots"
MESSAGES_PER_DAY: Final = "messages_per_day"
LLM_TOKENS_PER_DAY: Final = "llm_tokens_per_day"
#: owners per Redis pipeline of the sync
_SYNC_CHUNK: Final = 1000
_PER_DAY: Final = {UsageKind.MESSAGES: MESSAGES_PER_DAY, UsageKind.LLM_TOKENS: LLM_TOKENS_PER_DAY}


@dataclass(frozen=True, slots=True)
class Quota:
    """Limits in force for one owner; 0 = unlimited."""

    bots: int = 0
    messages_per_day: int = 0
    llm_tokens_per_day: int = 0

    def per_day(self, kind: UsageKind) -> int:
        return self.messages_per_day if kind is UsageKind.MESSAGES else self.llm_tokens_per_day

    def allows(self, kind: UsageKind, used: int) -> bool:
        limit = self.per_day(kind)
        return limit == 0 or used < limit


@dataclass(frozen=True, slots=True)
class QuotaOverride:
    """The admin's per-owner values; None = the configured default."""

    bots: int | None = None
    messages_per_day: int | None = None
    llm_tokens_per_day: int | None = None

    def apply(self, default: Quota) -> Quota:
        return Quota(
            default.bots if self.bots is None else self.bots,
            default.messages_per_day if self.messages_per_day is None else self.messages_per_day,
            default.llm_tokens_per_day
            if self.llm_tokens_per_day is None
            else self.llm_tokens_per_day,
        )


def defaults(settings: Settings) -> Quota:
    q = settings.quotas
    return Quota(q.bots, q.messages_per_day, q.llm_tokens_per_day)


def quota_name(kind: UsageKind) -> str:
    return _PER_DAY[kind]


def to_date(day: str) -> date:
    return datetime.strptime(day, "%Y%m%d").date()


class QuotaStore:
    """`owner_quotas` and `owner_usage`. Every query has a timeout."""

    def __init__(self, pool: asyncpg.Pool, timeout: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout

    async def overrides(self, owner_ids: Iterable[int]) -> dict[int, QuotaOverride]:
        rows = await self._pool.fetch(
            "SELECT owner_id, bots, messages_per_day, llm_tokens_per_day FROM owner_quotas"
            " WHERE owner_id = ANY($1::bigint[])",
            list(owner_ids),
            timeout=self._timeout,
        )
        return {
            r["owner_id"]: QuotaOverride(r["bots"], r["messages_per_day"], r["llm_tokens_per_day"])
            for r in rows
        }

    async def override(self, owner_id: int) -> QuotaOverride:
        return (await self.overrides((owner_id,))).get(owner_id, QuotaOverride())

    async def quota(self, settings: Settings, owner_id: int) -> Quota:
        return (await self.override(owner_id)).apply(defaults(settings))

    async def set_override(self, owner_id: int, value: QuotaOverride) -> bool:
        """Replace the owner's override; False if there is no such owner."""
        try:
            await self._pool.execute(
                "INSERT INTO owner_quotas (owner_id, bots, messages_per_day, llm_tokens_per_day)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (owner_id) DO UPDATE SET"
                " bots = $2, messages_per_day = $3, llm_tokens_per_day = $4, updated_at = now()",
                owner_id,
                value.bots,
                value.messages_per_day,
                value.llm_tokens_per_day,
                timeout=self._timeout,
            )
        except asyncpg.ForeignKeyViolationError:
            return False
        return True

    async def stored_usage(self, owner_ids: Iterable[int], day: str) -> dict[int, Usage]:
        rows = await self._pool.fetch(
            "SELECT owner_id, messages, llm_tokens FROM owner_usage"
            " WHERE day = $1 AND owner_id = ANY($2::bigint[])",
            to_date(day),
            list(owner_ids),
            timeout=self._timeout,
        )
        return {r["owner_id"]: Usage(r["messages"], r["llm_tokens"]) for r in rows}

    async def store_usage(self, day: str, usage: dict[int, Usage]) -> None:
        """Keep the larger of what is stored and `usage` (counts only grow within a day)."""
        if not usage:
            return
        await self._pool.executemany(
            "INSERT INTO owner_usage (owner_id, day, messages, llm_tokens)"
            " SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM owners WHERE id = $1)"
            " ON CONFLICT (owner_id, day) DO UPDATE SET"
            " messages = GREATEST(owner_usage.messages, EXCLUDED.messages),"
            " llm_tokens = GREATEST(owner_usage.llm_tokens, EXCLUDED.llm_tokens)",
            [(o, to_date(day), u.messages, u.llm_tokens) for o, u in usage.items()],
            timeout=self._timeout,
        )

    async def owner_ids(self) -> list[int]:
        rows = await self._pool.fetch("SELECT id FROM owners ORDER BY id", timeout=self._timeout)
        return [r["id"] for r in rows]


async def sync_usage(store: QuotaStore, counters: UsageCounters, day: str) -> dict[int, Usage]:
    """Runs in the master: Redis ⇄ PostgreSQL for `day`; each owner's totals.

    An owner whose Redis key lacks the `seeded` mark (new day, or Redis lost it) first
    gets PostgreSQL's figures added in Redis; then PostgreSQL keeps the larger figures."""
    owners = await store.owner_ids()
    stored = await store.stored_usage(owners, day)
    totals: dict[int, Usage] = {}
    for start in range(0, len(owners), _SYNC_CHUNK):  # bounded pipelines
        chunk = owners[start : start + _SYNC_CHUNK]
        totals.update(await counters.seed({o: stored.get(o, Usage()) for o in chunk}, day))
    await store.store_usage(day, {o: u for o, u in totals.items() if u != Usage()})
    return totals


async def usage_of(
    store: QuotaStore, counters: UsageCounters | None, owner_ids: list[int], day: str
) -> dict[int, Usage]:
    """What `owners show` and `GET /v1/owners/{id}` show: the larger of Redis and
    PostgreSQL per kind (Redis may be unreachable, or behind after losing a key)."""
    stored = await store.stored_usage(owner_ids, day)
    live: dict[int, Usage] = {}
    if counters is not None:
        live = await counters.read(owner_ids, day)
    out = {}
    for o in owner_ids:
        a, b = stored.get(o, Usage()), live.get(o, Usage())
        out[o] = Usage(max(a.messages, b.messages), max(a.llm_tokens, b.llm_tokens))
    return out


@dataclass(frozen=True, slots=True)
class OwnerReport:
    """One owner as `botvisor owners show` and `GET /v1/owners/{id}` show it."""

    id: int
    name: str
    created_at: datetime
    bots: int
    quota: Quota
    override: QuotaOverride
    day: str
    usage: Usage

    def public(self) -> dict[str, object]:
        d = to_date(self.day)
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "quota": {
                BOTS: self.quota.bots,
                MESSAGES_PER_DAY: self.quota.messages_per_day,
                LLM_TOKENS_PER_DAY: self.quota.llm_tokens_per_day,
            },
            "override": {
                BOTS: self.override.bots,
                MESSAGES_PER_DAY: self.override.messages_per_day,
                LLM_TOKENS_PER_DAY: self.override.llm_tokens_per_day,
            },
            "usage": {
                "day": d.isoformat(),
                "bots": self.bots,
                "messages": self.usage.messages,
                "llm_tokens": self.usage.llm_tokens,
            },
        }


async def owner_report(
    registry: Registry, settings: Settings, counters: UsageCounters | None, owner_id: int
) -> OwnerReport | None:
    """The owner with its quota and today's usage, or None if there is no such owner."""
    owner = await registry.owner(owner_id)
    if owner is None:
        return None
    store = QuotaStore(registry.pool, settings.database.timeout_s)
    override = await store.override(owner_id)
    day = utc_day()
    usage = (await usage_of(store, counters, [owner_id], day))[owner_id]
    return OwnerReport(
        owner.id,
        owner.name,
        owner.created_at,
        owner.bots,
        override.apply(defaults(settings)),
        override,
        day,
        usage,
    )
