"""Redis killed and restarted (empty) under load: the store serves from memory, queues
writes, replays them when Redis is back. A private redis-server, really killed."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from config import Settings
from context import Changes, ContextStore, Message, open_context_store
from tests.context_helpers import RedisProcess, durable_rows, ensure_migrated


@pytest.fixture
async def redis_proc() -> AsyncIterator[RedisProcess]:
    # a short path: unix socket paths are limited to ~107 bytes
    with tempfile.TemporaryDirectory(prefix="bv-redis-") as tmp:
        proc = RedisProcess(Path(tmp) / "redis.sock")
        await proc.start()
        try:
            yield proc
        finally:
            await proc.kill()


@pytest.fixture
async def private_settings(
    settings_factory: Callable[..., Settings], database_url: str, redis_proc: RedisProcess
) -> Settings:
    await ensure_migrated(database_url)
    return settings_factory(
        redis={"url": redis_proc.url, "timeout_s": 1.0},
        context={"max_messages": 10_000, "cache_bytes": 64 * 1024 * 1024},
    )


class Load:
    """Writers appending numbered messages to their chats until told to stop."""

    def __init__(self, store: ContextStore, bot: int, chats: int) -> None:
        self.store = store
        self.bot = bot
        self.sent = dict.fromkeys(range(1, chats + 1), 0)
        self.total = 0
        self.stop = asyncio.Event()
        self._progress = asyncio.Event()

    async def writer(self, chat: int) -> None:
        while not self.stop.is_set():
            n = self.sent[chat]
            await self.store.save(self.bot, chat, Changes(append=(Message("user", f"{chat}:{n}"),)))
            self.sent[chat] = n + 1
            self.total += 1
            self._progress.set()
            await asyncio.sleep(0)  # let the others (and the test) run: memory saves never wait

    async def wait_more(self, n: int) -> None:
        goal = self.total + n
        while self.total < goal:
            self._progress.clear()
            await self._progress.wait()


async def test_redis_killed_and_restarted_under_load_loses_nothing(
    private_settings: Settings, redis_proc: RedisProcess, database_url: str
) -> None:
    bot = secrets.randbelow(2**40) + 1
    other_bot = bot + 1
    async with open_context_store(private_settings) as store:
        await store.save(other_bot, 1, Changes(append=(Message("user", "untouched"),)))
        load = Load(store, bot, chats=20)
        writers = [asyncio.create_task(load.writer(c), name=f"test:writer:{c}") for c in load.sent]
        async with asyncio.timeout(30):
            await load.wait_more(200)
            await redis_proc.kill()
            await store.wait_health(lambda h: h["redis"] == "degraded")
            await load.wait_more(500)  # served from memory, queued
            assert store.health()["pending_redis_writes"] > 0
            # a bot that wrote nothing meanwhile still reads its chat (memory)
            assert [m.content for m in (await store.load(other_bot, 1)).messages] == ["untouched"]
            await redis_proc.start()  # empty: no persistence
            await store.wait_health(lambda h: h["redis"] != "degraded")
            await load.wait_more(200)
            load.stop.set()
            await asyncio.gather(*writers)  # a writer that raised would raise here
            await store.wait_health(lambda h: h["redis"] == "ok")
            assert store.health()["pending_redis_writes"] == 0
            assert await store.wait_durable(10)
        stats = store.statistics()
    assert stats.redis_errors > 0
    expected = {c: [f"{c}:{i}" for i in range(n)] for c, n in load.sent.items()}
    async with open_context_store(private_settings) as fresh:
        for chat, want in expected.items():
            got = [m.content for m in (await fresh.load(bot, chat)).messages]
            assert got == want, f"chat {chat}"
        # the chat untouched during the outage was lost by the restart: rebuilt from PostgreSQL
        untouched = await fresh.load(other_bot, 1)
        assert [m.content for m in untouched.messages] == ["untouched"]
        assert fresh.statistics().redis_hits == len(expected)
    rows = await durable_rows(database_url, bot)
    assert sorted(rows) == sorted(x for want in expected.values() for x in want)
