"""The context store on real Redis and PostgreSQL: layers, compare-and-set, rebuilds."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from config import Settings
from context import Changes, Context, ContextStore, Message, open_context_store
from context.lru import ChatCache
from context.model import RESET_ROLE, apply_changes, recent_history
from context.pending import ALL, PendingChat, replay
from context.redis_io import RedisContexts, Ttls
from ipc import keys
from supervisor.registry import migrations as migrations_package
from tests.context_helpers import (
    TcpProxy,
    delete_prefix,
    durable_rows,
    ensure_migrated,
    postgres_address,
    via_proxy,
)


@pytest.fixture
async def settings(settings_factory: Callable[..., Settings], database_url: str) -> Settings:
    await ensure_migrated(database_url)
    return settings_factory(context={"max_messages": 1000})


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[ContextStore]:
    async with open_context_store(settings) as s:
        yield s


MIGRATIONS = Path(migrations_package.__file__).parent


def new_bot() -> int:
    """Bot ids of this test alone: the database is shared by the session."""
    return secrets.randbelow(2**40) + 1


def say(text: str, role: str = "user", ts: float | None = None) -> Changes:
    m = Message(role, text) if ts is None else Message(role, text, ts)
    return Changes(append=(m,))


def texts(ctx: Context) -> list[str]:
    return [m.content for m in ctx.messages]


# -- pure parts --------------------------------------------------------------------------


def test_changes_apply_in_order_reset_clear_set_append() -> None:
    ctx = Context(1, 2, "v", {"a": 1, "b": 2}, (Message("user", "old"),), {"lang": "en"})
    out = apply_changes(
        ctx,
        Changes(
            append=(Message("user", "new"),),
            dialog_set={"c": 3},
            dialog_clear=("a",),
            prefs_set={"tz": "UTC"},
        ),
        max_messages=10,
    )
    assert dict(out.dialog) == {"b": 2, "c": 3}
    assert texts(out) == ["old", "new"]
    assert dict(out.prefs) == {"lang": "en", "tz": "UTC"}
    wiped = apply_changes(out, Changes(reset=True, append=(Message("user", "x"),)), 10)
    assert (dict(wiped.dialog), texts(wiped), dict(wiped.prefs)) == (
        {},
        ["x"],
        {"lang": "en", "tz": "UTC"},
    )


@given(st.lists(st.text(max_size=5), max_size=40), st.integers(1, 15))
def test_appends_keep_the_newest_max_messages_in_order(items: list[str], cap: int) -> None:
    ctx = Context(1, 2)
    for item in items:
        ctx = apply_changes(ctx, Changes(append=(Message("user", item, 1.0),)), cap)
    assert texts(ctx) == items[-cap:]


def test_rebuild_history_dedupes_cuts_at_reset_and_keeps_the_newest() -> None:
    m = [Message("user", str(i), 100.0 + i) for i in range(6)]
    marker = Message(RESET_ROLE, "", 102.5)
    durable_newest_first = [m[3], marker, m[2], m[1], m[0]]
    queued = [m[3], m[4], m[5]]  # m[3] committed while we read: counted once
    assert [x.content for x in recent_history(durable_newest_first, queued, 10)] == [
        "3",
        "4",
        "5",
    ]
    assert [x.content for x in recent_history(durable_newest_first, queued, 2)] == ["4", "5"]


def test_lru_is_bounded_by_entries_and_bytes_and_expires() -> None:
    now = [0.0]
    cache = ChatCache(max_entries=3, max_bytes=10_000, ttl_s=60, clock=lambda: now[0])
    for chat in range(5):
        cache.put(Context(1, chat, "v"))
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) is not None
    big = Context(1, 9, "v", messages=(Message("user", "x" * 4000),))
    cache.put(big)
    cache.put(Context(1, 10, "v", messages=(Message("user", "y" * 4000),)))
    stats = cache.statistics()
    assert stats.bytes <= 10_000 and cache.get(10) is not None
    now[0] = 61
    assert cache.get(10) is None and cache.statistics().expirations == 1
    cache.put(Context(1, 11, "v", messages=(Message("user", "z" * 20_000),)))
    assert cache.get(11) is None  # alone over budget: not cached at all


# -- Redis and PostgreSQL ----------------------------------------------------------------


async def test_save_writes_each_namespace_with_its_ttl_and_a_fresh_store_reads_it(
    settings: Settings, store: ContextStore, redis_url: str
) -> None:
    bot = new_bot()
    saved = await store.save(
        bot, 7, Changes(append=(Message("user", "hi"),), dialog_set={"step": 1}, prefs_set={"l": 2})
    )
    assert saved.version and texts(saved) == ["hi"]
    assert (await store.load(bot, 7)) is saved  # memory hit
    client = aioredis.from_url(redis_url)
    try:
        p = settings.redis.prefix
        ttl = {
            ns: await client.pttl(keys.context_key(p, bot, 7, ns))
            for ns in ("dialog", "messages", "prefs")
        }
        ver = await client.get(keys.context_version_key(p, bot, 7))
    finally:
        await client.aclose()
    c = settings.context
    assert c.dialog_ttl_s * 1000 - 5000 < ttl["dialog"] <= c.dialog_ttl_s * 1000
    assert c.messages_ttl_s * 1000 - 5000 < ttl["messages"] <= c.messages_ttl_s * 1000
    assert c.prefs_ttl_s * 1000 - 5000 < ttl["prefs"] <= c.prefs_ttl_s * 1000
    assert ver == saved.version.encode()
    async with open_context_store(settings) as other:
        loaded = await other.load(bot, 7)
        stats = other.statistics()
    assert loaded == saved
    assert (stats.memory_misses, stats.redis_hits) == (1, 1)
    s = store.statistics()
    assert (s.memory_hits, s.saves) == (1, 1)


async def test_a_stale_writer_is_retried_on_fresh_state_not_written_over_it(
    settings: Settings,
) -> None:
    bot = new_bot()
    async with open_context_store(settings) as a, open_context_store(settings) as b:
        await a.save(bot, 1, say("first"))
        await b.load(bot, 1)  # b caches the first version
        await a.save(bot, 1, Changes(append=(Message("user", "second"),), dialog_set={"x": 1}))
        out = await b.save(bot, 1, Changes(append=(Message("user", "third"),), dialog_set={"y": 2}))
        assert b.statistics().conflicts == 1
    assert texts(out) == ["first", "second", "third"]
    assert dict(out.dialog) == {"x": 1, "y": 2}


async def test_200_concurrent_writers_on_one_chat_lose_no_write(
    settings: Settings, database_url: str
) -> None:
    bot, chat = new_bot(), 42
    n_stores, per_store = 8, 25  # eight "workers", 200 writers in all
    async with (
        open_context_store(settings) as s0,
        open_context_store(settings) as s1,
        open_context_store(settings) as s2,
        open_context_store(settings) as s3,
        open_context_store(settings) as s4,
        open_context_store(settings) as s5,
        open_context_store(settings) as s6,
        open_context_store(settings) as s7,
    ):
        stores = [s0, s1, s2, s3, s4, s5, s6, s7]
        await asyncio.gather(*(s.load(bot, chat) for s in stores))  # all cache version ""

        async def writer(store: ContextStore, i: int) -> None:
            await store.save(
                bot,
                chat,
                Changes(
                    append=(Message("user", f"w{i}"),),
                    dialog_set={f"k{i}": i},
                    prefs_set={f"p{i}": True},
                ),
            )

        await asyncio.gather(
            *(writer(stores[i % n_stores], i) for i in range(n_stores * per_store))
        )
        conflicts = sum(s.statistics().conflicts for s in stores)
    async with open_context_store(settings) as fresh:
        final = await fresh.load(bot, chat)
    n = n_stores * per_store
    assert sorted(texts(final)) == sorted(f"w{i}" for i in range(n))
    assert dict(final.dialog) == {f"k{i}": i for i in range(n)}
    assert len(final.prefs) == n
    assert conflicts > 0  # the writers really raced
    assert sorted(await durable_rows(database_url, bot, chat)) == sorted(f"w{i}" for i in range(n))


async def test_a_chat_lost_by_redis_is_rebuilt_from_postgres_after_its_last_reset(
    settings: Settings, redis_url: str
) -> None:
    bot = new_bot()
    async with open_context_store(settings) as store:
        for text in ("a", "b"):
            await store.save(bot, 5, say(text))
        await store.save(bot, 5, Changes(reset=True, append=(Message("user", "c"),)))
        await store.save(bot, 5, say("d", "assistant"))
        await store.save(bot, 6, say("other chat"))
    assert await delete_prefix(redis_url, settings.redis.prefix) > 0  # the flush
    async with open_context_store(settings) as fresh:
        ctx = await fresh.load(bot, 5)
        stats = fresh.statistics()
    assert texts(ctx) == ["c", "d"]
    assert [m.role for m in ctx.messages] == ["user", "assistant"]
    assert (stats.redis_misses, stats.postgres_hits) == (1, 1)


async def test_a_new_chat_needs_no_history_query_but_queued_or_old_history_is_found(
    settings: Settings, redis_url: str, database_url: str
) -> None:
    """A chat in neither Redis nor `chat_state` is new (no history query); rows still
    queued for PostgreSQL, and history older than `chat_state` (migration 0010 gives it
    its row), are not taken for nothing."""
    bot = new_bot()
    async with open_context_store(settings) as store:
        assert (await store.load(bot, 1)).empty
        stats = store.statistics()
        assert (stats.redis_misses, stats.postgres_misses, stats.postgres_hits) == (1, 1, 0)
        # rows queued, not yet committed: the writer is held by a lock on the table
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
                await store.save(bot, 2, say("queued"))
                await delete_prefix(redis_url, settings.redis.prefix)
                store.forget_bot(bot)  # a cold cache
                assert texts(await store.load(bot, 2)) == ["queued"]
        finally:
            await conn.close(timeout=10)
        assert await store.wait_durable(10)
    # history written before chat_state existed: no row until the backfill
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.execute(
            "INSERT INTO messages (bot_id, chat_id, role, content) VALUES ($1, 3, 'user', 'old')",
            bot,
        )
        await conn.execute((MIGRATIONS / "0010_chat_state_backfill.sql").read_text())
    finally:
        await conn.close(timeout=10)
    async with open_context_store(settings) as fresh:
        assert texts(await fresh.load(bot, 3)) == ["old"]


async def test_a_flush_under_a_warm_cache_rebuilds_and_keeps_dialog_from_memory(
    settings: Settings, store: ContextStore, redis_url: str
) -> None:
    bot = new_bot()
    await store.save(bot, 5, Changes(append=(Message("user", "a"),), dialog_set={"mode": "x"}))
    await store.save(bot, 5, say("b"))
    await delete_prefix(redis_url, settings.redis.prefix)
    out = await store.save(bot, 5, say("c"))
    assert texts(out) == ["a", "b", "c"]
    assert dict(out.dialog) == {"mode": "x"}
    async with open_context_store(settings) as fresh:
        assert await fresh.load(bot, 5) == out  # written back to Redis whole


async def test_history_older_than_the_messages_ttl_is_not_resurrected(
    settings_factory: Callable[..., Settings], redis_url: str, database_url: str
) -> None:
    await ensure_migrated(database_url)
    settings = settings_factory(context={"messages_ttl_s": 60})
    bot = new_bot()
    async with open_context_store(settings) as store:
        await store.save(bot, 1, say("ancient", ts=round(time.time() - 3600, 6)))
        await store.save(bot, 1, say("recent"))
    await delete_prefix(redis_url, settings.redis.prefix)
    async with open_context_store(settings) as fresh:
        assert texts(await fresh.load(bot, 1)) == ["recent"]


async def test_postgres_down_keeps_serving_and_writes_the_history_when_back(
    settings_factory: Callable[..., Settings], database_url: str
) -> None:
    await ensure_migrated(database_url)
    proxy = TcpProxy(postgres_address(database_url))
    await proxy.start()
    settings = settings_factory(
        database={"url": via_proxy(database_url, proxy.port), "timeout_s": 1.0}
    )
    bot = new_bot()
    try:
        async with open_context_store(settings) as store:
            await store.save(bot, 1, say("before"))
            assert await store.wait_durable(5)
            await proxy.stop()  # PostgreSQL unreachable
            for i in range(5):
                out = await store.save(bot, 1, say(f"during {i}"))
            await store.wait_health(lambda h: h["postgres"] == "degraded")
            assert texts(await store.load(bot, 1)) == texts(out)
            assert store.health()["pending_durable_writes"] > 0
            await proxy.start()
            assert await store.wait_durable(15)
            assert store.health()["postgres"] == "ok"
    finally:
        await proxy.stop()
    assert await durable_rows(database_url, bot) == ["before", *(f"during {i}" for i in range(5))]


async def test_replay_applies_queued_changes_on_a_newer_writers_state_each_message_once(
    settings: Settings, redis_url: str
) -> None:
    client = aioredis.from_url(redis_url)
    rc = RedisContexts(client, settings.redis.prefix, Ttls(60_000, 60_000, 60_000))
    one, two, three = (Message("user", t) for t in ("one", "two", "three"))
    try:
        ok, v1 = await rc.write("", Context(1, 9, messages=(one,)), ALL, "v1")
        assert ok
        queued = Changes(append=(two,), dialog_set={"a": 1})
        pending = PendingChat(apply_changes(v1, queued, 100), "v1", "lost-answer", [queued])
        # meanwhile another worker rebuilt the chat from PostgreSQL (which has `two`)
        theirs = Context(1, 9, messages=(one, two, three), dialog={"b": 2})
        assert (await rc.write("v1", theirs, ALL, "v2"))[0]
        final = await replay(rc, pending, 100)
    finally:
        await client.aclose()
    assert texts(final) == ["one", "two", "three"]
    assert dict(final.dialog) == {"a": 1, "b": 2}


async def test_replay_after_a_lost_answer_that_landed_writes_memory_state_as_is(
    settings: Settings, redis_url: str
) -> None:
    client = aioredis.from_url(redis_url)
    rc = RedisContexts(client, settings.redis.prefix, Ttls(60_000, 60_000, 60_000))
    first, second = Changes(append=(Message("user", "a"),)), Changes(append=(Message("user", "b"),))
    try:
        base = Context(1, 3)
        after_first = apply_changes(base, first, 100)
        assert (await rc.write("", after_first, ALL, "landed"))[0]  # its answer was lost
        pending = PendingChat(
            apply_changes(after_first, second, 100), "", "landed", [first, second]
        )
        final = await replay(rc, pending, 100)
    finally:
        await client.aclose()
    assert texts(final) == ["a", "b"]  # not a, a, b
