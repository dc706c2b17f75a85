"""The per-worker progress flusher against real Redis: coalesced, bulk-read, fault-tolerant."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
import redis.asyncio as aioredis

from ipc import keys
from ipc.offsets import CHUNK, BotProgress, RedisProgress
from ipc.redis_client import redis_client


@pytest.fixture
async def client(redis_url: str) -> aioredis.Redis:
    c = redis_client(redis_url, 5.0)
    yield c
    await c.aclose()


async def _flusher(progress: RedisProgress) -> asyncio.Task[None]:
    return asyncio.create_task(progress.run())


async def test_thousands_of_marks_are_written_in_a_few_pipelined_flushes(
    client: aioredis.Redis, key_prefix: str
) -> None:
    progress = RedisProgress(client, key_prefix, 5.0)
    task = await _flusher(progress)
    try:
        n = 2 * CHUNK + 500
        for bot_id in range(1, n + 1):
            record = BotProgress(bot_id * 10, frozenset({bot_id * 10 + 2}))
            progress.mark(bot_id, lambda r=record: r)
        assert await progress.flush(10)
        assert progress.keys_written == n
        assert progress.flushes <= 2  # coalesced: never one write per mark
        loaded = await progress.load_many(list(range(1, n + 1)))
        assert len(loaded) == n
        assert loaded[7] == BotProgress(70, frozenset({72}))
        ttl = await client.ttl(keys.offset_key(key_prefix, 7))
        assert 86_000 < ttl <= 86_400  # Telegram keeps an update 24 h; so do we
        # the snapshot is read at flush time: the newest state wins
        state = {"w": 1}
        progress.mark(1, lambda: BotProgress(state["w"]))
        state["w"] = 99
        assert await progress.flush(10)
        assert await progress.load(1) == BotProgress(99)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_redis_fails_the_flush_and_keeps_the_marks(
    client: aioredis.Redis, key_prefix: str
) -> None:
    dead = redis_client(f"redis://127.0.0.1:{_closed_port()}/0", 0.5)
    progress = RedisProgress(dead, key_prefix, 0.5)
    task = await _flusher(progress)
    try:
        progress.mark(5, lambda: BotProgress(50))
        assert not await progress.flush(3)
        assert await progress.load_many([5]) == {}  # a failed read is "unknown", no crash
        # the marks survive for the next flush: point the store at the live server
        progress._redis = client  # noqa: SLF001 - Redis is back
        assert await progress.flush(10)
        assert await RedisProgress(client, key_prefix, 5.0).load(5) == BotProgress(50)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await dead.aclose()
