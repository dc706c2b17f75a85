"""Usage counters per owner and UTC day in Redis: what quotas are checked against.

One hash per owner and day, `{prefix}usage:{owner}:{YYYYMMDD}` (ipc/keys.py), fields
`messages` and `llm_tokens`, plus `seeded` once the master has added what PostgreSQL
remembered of that day (supervisor/registry/quotas.py: `sync_usage`). Workers add with
pipelined HINCRBYs (one round trip per flush, never one per message); the key lives
`TTL_S`, long enough for yesterday's figures to be copied to PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

import redis.asyncio as aioredis

from ipc import keys

#: Three days: today, yesterday's last minutes until the master copied them, and slack.
TTL_S: Final = 3 * 86_400

# Adds PostgreSQL's figures once per key (after Redis lost the key, or on a new day);
# returns the totals. KEYS[1] the hash; ARGV messages, llm_tokens, ttl.
_SEED: Final = """
if redis.call('HSETNX', KEYS[1], 'seeded', '1') == 1 then
  redis.call('HINCRBY', KEYS[1], 'messages', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'llm_tokens', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {tonumber(redis.call('HGET', KEYS[1], 'messages') or '0'),
        tonumber(redis.call('HGET', KEYS[1], 'llm_tokens') or '0')}
"""


class UsageKind(StrEnum):
    """What a quota counts (hash fields, and the names of the quota kinds)."""

    #: updates an owner's bots handled
    MESSAGES = "messages"
    #: LLM prompt + completion tokens
    LLM_TOKENS = "llm_tokens"


@dataclass(frozen=True, slots=True)
class Usage:
    messages: int = 0
    llm_tokens: int = 0

    def of(self, kind: UsageKind) -> int:
        return self.messages if kind is UsageKind.MESSAGES else self.llm_tokens


def utc_day(at: datetime | None = None) -> str:
    """The UTC day as YYYYMMDD (quotas reset at midnight UTC)."""
    return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d")


def _usage(raw: Mapping[bytes | str, bytes | str]) -> Usage:
    def field(name: str) -> int:
        value = raw.get(name.encode()) or raw.get(name)
        return int(value) if value else 0

    return Usage(field("messages"), field("llm_tokens"))


class UsageCounters:
    """Runs in any process with a Redis client; every call is bounded by `timeout`."""

    def __init__(self, redis: aioredis.Redis, prefix: str, timeout: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._seed = redis.register_script(_SEED)

    async def add(
        self, deltas: Mapping[tuple[int, str], Mapping[UsageKind, int]]
    ) -> dict[tuple[int, str], Usage]:
        """Add `{(owner, day): {kind: n}}` in one pipeline; the new totals (every worker's)."""
        order = list(deltas)
        async with asyncio.timeout(self._timeout):
            pipe = self._redis.pipeline(transaction=False)
            for owner_id, day in order:
                key = keys.usage_key(self._prefix, owner_id, day)
                for kind, n in deltas[(owner_id, day)].items():
                    pipe.hincrby(key, str(kind), n)
                pipe.expire(key, TTL_S)
                pipe.hgetall(key)
            results = await pipe.execute()
        out: dict[tuple[int, str], Usage] = {}
        at = 0
        for owner, day in order:
            at += len(deltas[(owner, day)]) + 1
            out[(owner, day)] = _usage(results[at])
            at += 1
        return out

    async def read(self, owner_ids: Iterable[int], day: str) -> dict[int, Usage]:
        """Each owner's usage on `day` as Redis has it (0 for no key)."""
        ids = list(owner_ids)
        async with asyncio.timeout(self._timeout):
            pipe = self._redis.pipeline(transaction=False)
            for owner_id in ids:
                pipe.hgetall(keys.usage_key(self._prefix, owner_id, day))
            results = await pipe.execute()
        return {owner_id: _usage(raw) for owner_id, raw in zip(ids, results, strict=True)}

    async def seed(self, bases: Mapping[int, Usage], day: str) -> dict[int, Usage]:
        """Add each owner's `base` (PostgreSQL's figures) unless its key already has them,
        in one pipeline; every owner's totals."""
        ids = list(bases)
        async with asyncio.timeout(self._timeout):
            pipe = self._redis.pipeline(transaction=False)
            for owner_id in ids:
                key = keys.usage_key(self._prefix, owner_id, day)
                base = bases[owner_id]
                await self._seed(
                    keys=[key], args=[base.messages, base.llm_tokens, TTL_S], client=pipe
                )
            results = await pipe.execute()
        return {o: Usage(int(r[0]), int(r[1])) for o, r in zip(ids, results, strict=True)}
