"""The store's configuration (from Settings) and its counters (`statistics()`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from config import Settings


@dataclass(frozen=True, slots=True)
class StoreConfig:
    prefix: str
    redis_timeout_s: float
    postgres_timeout_s: float
    dialog_ttl_s: int
    messages_ttl_s: int
    prefs_ttl_s: int
    max_messages: int
    cache_entries: int
    cache_bytes: int
    #: Writes kept in memory while Redis is down; past it saves raise ContextUnavailable.
    pending_max: int = 200_000
    #: Bytes cached across every bot of the worker (LRU across bots).
    cache_bytes_worker: int = 33_554_432

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: int | float) -> StoreConfig:
        c = settings.context
        values: dict[str, object] = {
            "prefix": settings.redis.prefix,
            "redis_timeout_s": settings.redis.timeout_s,
            "postgres_timeout_s": settings.database.timeout_s,
            "dialog_ttl_s": c.dialog_ttl_s,
            "messages_ttl_s": c.messages_ttl_s,
            "prefs_ttl_s": c.prefs_ttl_s,
            "max_messages": c.max_messages,
            "cache_entries": c.cache_entries,
            "cache_bytes": c.cache_bytes,
            "cache_bytes_worker": c.cache_bytes_worker,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def cache_ttl_s(self) -> float:
        """A cached chat never outlives the shortest namespace TTL it was read under."""
        return float(min(self.dialog_ttl_s, self.messages_ttl_s, self.prefs_ttl_s))


@dataclass(frozen=True, slots=True)
class ContextStatistics:
    """Cumulative since the store opened (the worker diffs them into metrics)."""

    memory_hits: int
    memory_misses: int
    redis_hits: int
    redis_misses: int
    #: Rebuilds that found history in PostgreSQL / found none (a new chat).
    postgres_hits: int
    postgres_misses: int
    saves: int
    conflicts: int
    redis_errors: int
    #: Redis copies found older than PostgreSQL (rebuilt from it).
    stale_redis: int
    postgres_errors: int
    pending_redis_chats: int
    pending_redis_writes: int
    durable_queued: int
    durable_written: int
    durable_dropped: int
    cached_chats: int
    cached_bytes: int
    evictions: int


class Counters:
    """Plain ints bumped on the hot path; `freeze` makes the public snapshot."""

    __slots__ = (
        "conflicts",
        "memory_hits",
        "memory_misses",
        "postgres_hits",
        "postgres_misses",
        "rebuild_errors",
        "redis_errors",
        "redis_hits",
        "redis_misses",
        "saves",
        "stale_redis",
    )

    def __init__(self) -> None:
        self.memory_hits = 0
        self.memory_misses = 0
        self.redis_hits = 0
        self.redis_misses = 0
        self.postgres_hits = 0
        self.postgres_misses = 0
        self.rebuild_errors = 0
        self.saves = 0
        self.conflicts = 0
        self.redis_errors = 0
        self.stale_redis = 0

    def freeze(self, **rest: int) -> ContextStatistics:
        own = {
            f.name: getattr(self, f.name) for f in fields(ContextStatistics) if f.name not in rest
        }
        return ContextStatistics(**own, **rest)
