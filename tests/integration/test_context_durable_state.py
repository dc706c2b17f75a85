"""Issue 9: context writes are never lost and a stale Redis is never believed.

A private redis-server the tests freeze (SIGSTOP) and wipe; real PostgreSQL. The store
queues writes in memory while Redis is frozen; closing flushes them to PostgreSQL, and
the next store that finds Redis's older copy rebuilds the chat from PostgreSQL."""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from config import Settings
from context import Changes, Message, handed_off, handoff_changes, open_context_store
from tests.context_helpers import RedisProcess, delete_prefix, ensure_migrated

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def redis_proc() -> AsyncIterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="bv-redis-") as tmp:
        proc = RedisProcess(Path(tmp) / "redis.sock")
        await proc.start()
        try:
            yield proc
        finally:
            if proc.proc is not None and proc.proc.returncode is None:
                os.kill(proc.proc.pid, signal.SIGCONT)
            await proc.kill()


@pytest.fixture
async def private_settings(
    settings_factory: Callable[..., Settings], database_url: str, redis_proc: RedisProcess
) -> Settings:
    await ensure_migrated(database_url)
    return settings_factory(redis={"url": redis_proc.url, "timeout_s": 0.5})


def freeze(proc: RedisProcess, sig: int) -> None:
    assert proc.proc is not None
    os.kill(proc.proc.pid, sig)


def turn(n: int) -> Changes:
    return Changes(append=(Message("user", f"q{n}"), Message("assistant", f"a{n}")))


async def test_writes_held_while_redis_is_frozen_survive_the_exit_and_beat_the_stale_copy(
    private_settings: Settings, redis_proc: RedisProcess
) -> None:
    bot, chat = 9001, secrets.randbelow(2**40) + 1
    async with open_context_store(private_settings) as store:
        for n in range(2):
            await store.save(bot, chat, turn(n))
        assert await store.wait_durable(10)
        freeze(redis_proc, signal.SIGSTOP)  # Redis keeps the copy of 2 turns
        for n in range(2, 4):
            await store.save(bot, chat, turn(n))
        assert store.health()["redis"] == "degraded"
        closing = time.monotonic()
    # closed while Redis hung: bounded, and PostgreSQL took every held write
    assert time.monotonic() - closing < 4.0
    freeze(redis_proc, signal.SIGCONT)
    async with open_context_store(private_settings) as store:  # a cold cache
        ctx = await store.load(bot, chat)
        assert [m.content for m in ctx.messages] == [
            x for n in range(4) for x in (f"q{n}", f"a{n}")
        ]
        assert store.statistics().stale_redis == 1
        # the rebuilt chat went back to Redis: the next cold load trusts it
        store.forget_bot(bot)
        again = await store.load(bot, chat)
        assert len(again.messages) == 8 and again.version
        assert store.statistics().stale_redis == 1


async def test_dialog_prefs_and_handoff_survive_a_redis_wipe_with_a_cold_cache(
    private_settings: Settings, database_url: str
) -> None:
    bot, chat = 9002, secrets.randbelow(2**40) + 1
    async with open_context_store(private_settings) as store:
        await store.save(bot, chat, Changes(prefs_set={"lang": "de"}, dialog_set={"step": 2}))
        await store.save(bot, chat, handoff_changes("command", Message("user", "human please")))
        assert await store.wait_durable(10)
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT handoff IS NOT NULL AS h FROM chat_state WHERE bot_id = $1 AND chat_id = $2",
            bot,
            chat,
        )
    finally:
        await conn.close(timeout=10)
    assert row is not None and row["h"]
    assert await delete_prefix(private_settings.redis.url or "", private_settings.redis.prefix)
    async with open_context_store(private_settings) as store:
        ctx = await store.load(bot, chat)
    assert handed_off(ctx)
    assert ctx.dialog["step"] == 2 and ctx.prefs["lang"] == "de"
    assert [m.content for m in ctx.messages] == ["human please"]


async def test_a_reset_and_a_release_are_durable_too(private_settings: Settings) -> None:
    bot, chat = 9003, secrets.randbelow(2**40) + 1
    async with open_context_store(private_settings) as store:
        await store.save(bot, chat, handoff_changes("command", Message("user", "help")))
        await store.save(bot, chat, Changes(dialog_clear=("handoff",)))
        await store.save(bot, chat, turn(1))
        await store.save(bot, chat, Changes(reset=True))
        assert await store.wait_durable(10)
    assert await delete_prefix(private_settings.redis.url or "", private_settings.redis.prefix)
    async with open_context_store(private_settings) as store:
        ctx = await store.load(bot, chat)
    assert not handed_off(ctx) and not ctx.messages
