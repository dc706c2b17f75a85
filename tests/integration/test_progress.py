"""The per-worker progress flusher against real Redis: coalesced, bulk-read, fault-tolerant."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis.asyncio as aioredis

from ipc import keys
from ipc.offsets import CHUNK, BotProgress, RedisProgress
from ipc.redis_client import redis_client
from tests.context_helpers import TcpProxy


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


def _redis_target(url: str) -> tuple[tuple[str, int] | str, int]:
    """Where the test Redis listens, (host, port) or a Unix socket path, and its db."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path, int(dict(parse_qsl(parts.query)).get("db", 0))
    return (parts.hostname or "127.0.0.1", parts.port or 6379), int(parts.path.strip("/") or 0)


@pytest.fixture
async def slow_link(redis_url: str) -> AsyncIterator[tuple[TcpProxy, aioredis.Redis]]:
    """The test Redis behind a proxy whose answers can be delayed, and a client of it."""
    target, db = _redis_target(redis_url)
    proxy = TcpProxy(target)
    await proxy.start()
    client = redis_client(f"redis://127.0.0.1:{proxy.port}/{db}", 5.0, pool_max=2)
    try:
        await client.ping()  # the connection (and its handshake) is made before any delay
        yield proxy, client
    finally:
        proxy.reply_delay_s = 0.0
        await client.aclose()
        await proxy.stop()


async def test_a_stopping_bot_waits_for_a_slow_flusher_while_its_writes_land(
    slow_link: tuple[TcpProxy, aioredis.Redis], key_prefix: str
) -> None:
    """Each write takes 0.6 s and ours is the second: it lands past the 1 s stall bound,
    but a write landed meanwhile, so the wait goes on (a whole fleet stopping at once on
    a busy machine gave up after 1 s before: actor.progress_not_saved)."""
    proxy, client = slow_link
    progress = RedisProgress(client, key_prefix, 5.0)
    task = await _flusher(progress)
    taken = asyncio.Event()

    def first() -> BotProgress:
        # read as its write starts: this mark goes to the next write, after this one
        progress.mark(2, lambda: BotProgress(20))
        taken.set()
        return BotProgress(10)

    try:
        proxy.reply_delay_s = 0.6
        progress.mark(1, first)  # wakes the flusher
        await asyncio.wait_for(taken.wait(), 5)
        started = time.monotonic()
        assert await progress.flush(5.0, stall_s=1.0)
        assert time.monotonic() - started > 1.0  # it did wait past the stall bound
        proxy.reply_delay_s = 0.0
        assert await progress.load_many([1, 2]) == {1: BotProgress(10), 2: BotProgress(20)}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_redis_that_stopped_answering_fails_the_flush_at_the_stall_bound(
    slow_link: tuple[TcpProxy, aioredis.Redis], key_prefix: str
) -> None:
    proxy, client = slow_link
    progress = RedisProgress(client, key_prefix, 5.0)
    task = await _flusher(progress)
    try:
        proxy.reply_delay_s = 60.0  # no answer within any bound here
        progress.mark(3, lambda: BotProgress(30))
        started = time.monotonic()
        assert not await progress.flush(30.0, stall_s=0.5)
        assert time.monotonic() - started < 5.0  # the stall bound, not the 30 s timeout
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
