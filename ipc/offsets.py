"""The confirm watermark of every bot in Redis (the `OffsetStore` of the worker's actors)."""

from __future__ import annotations

import redis.asyncio as aioredis
import structlog

from ipc import keys

log = structlog.get_logger(__name__)

#: Telegram keeps an update at most 24 h; an older watermark means nothing.
TTL_S = 86_400


class RedisOffsets:
    """Runs in the worker's loop. A Redis fault costs duplicates, never a crash."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def load(self, bot_id: int) -> int | None:
        try:
            raw = await self._redis.get(keys.offset_key(self._prefix, bot_id))
        except (aioredis.RedisError, OSError) as exc:
            log.warning("offset.load_failed", bot_id=bot_id, error=type(exc).__name__)
            return None
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    async def load_many(self, bot_ids: list[int]) -> dict[int, int]:
        """One MGET per thousand bots: a worker starting thousands of bots at once."""
        out: dict[int, int] = {}
        for start in range(0, len(bot_ids), 1000):
            chunk = bot_ids[start : start + 1000]
            try:
                raw = await self._redis.mget([keys.offset_key(self._prefix, b) for b in chunk])
            except (aioredis.RedisError, OSError) as exc:
                log.warning("offset.load_failed", bots=len(chunk), error=type(exc).__name__)
                continue
            for bot_id, value in zip(chunk, raw, strict=True):
                if value is not None and value.isdigit():
                    out[bot_id] = int(value)
        return out

    async def save(self, bot_id: int, offset: int) -> None:
        try:
            await self._redis.set(keys.offset_key(self._prefix, bot_id), offset, ex=TTL_S)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("offset.save_failed", bot_id=bot_id, error=type(exc).__name__)
