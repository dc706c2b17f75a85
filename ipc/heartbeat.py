"""The heartbeat record a worker writes and the master reads (JSON in a Redis key)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Versioned by tolerance: unknown fields are ignored and every field has a default,
    so a master reads the heartbeats of a newer or older worker (rolling upgrades)."""

    index: int = -1
    pid: int = 0
    #: booting | ready | draining
    state: str = "booting"
    shards: list[int] = field(default_factory=list)
    desired: int = 0
    bots: dict[str, int] = field(default_factory=dict)
    loop_lag_s: float = 0.0
    at: float = 0.0  # wall clock (time.time()) of writing
    epoch: int = -1  # the shard assignment this worker has applied
    totals: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    #: the context store's layers: redis / postgres "ok" | "recovering" | "degraded"
    health: dict[str, str | int] = field(default_factory=dict)

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> Heartbeat | None:
        try:
            data: Any = orjson.loads(raw)
            if not isinstance(data, dict):
                return None
            return cls(**{k: v for k, v in data.items() if k in _FIELDS})
        except (orjson.JSONDecodeError, TypeError):
            return None

    @property
    def running(self) -> int:
        return self.bots.get("running", 0)


_FIELDS = frozenset(f.name for f in fields(Heartbeat))


async def reply_status(redis: aioredis.Redis, reply_to: str, status: dict[str, Any]) -> None:
    """Answer a `StatusRequest`: push our figures to the asker's list (which expires)."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.rpush(reply_to, orjson.dumps(status))
            pipe.expire(reply_to, 30)
            await pipe.execute()
    except (aioredis.RedisError, OSError) as exc:
        log.warning("status.reply_failed", error=type(exc).__name__)
