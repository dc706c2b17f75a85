"""Reconcile by change against real PostgreSQL: the change cursor, tombstones, hints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from bots.telegram.token import BotToken
from config import Settings
from supervisor.registry.bot_records import BotState
from supervisor.registry.bots import Registry
from supervisor.registry.changes import ChangeFeed
from supervisor.registry.migrate import migrate
from supervisor.registry.owners import create_owner
from supervisor.registry.tokenbox import open_tokenbox
from supervisor.services import create_pool
from supervisor.worker.reconcile import Reconciler
from tests.reconcile_helpers import FakeHost

SHARDS = 4


def token(bot_id: int) -> BotToken:
    return BotToken(f"{bot_id}:{'A' * 35}")


@pytest.fixture
async def world(
    fresh_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Settings, asyncpg.Pool, Registry]]:
    settings = fresh_settings(workers={"shards": SHARDS})
    pool = await create_pool(settings)
    try:
        async with pool.acquire(timeout=10) as conn:
            await migrate(conn)
        yield settings, pool, Registry(pool, open_tokenbox(settings), 10.0)
    finally:
        await pool.close()


def reconciler(settings: Settings, pool: asyncpg.Pool, registry: Registry) -> Any:
    decrypted: list[int] = []

    def decrypt(bot_id: int, blob: bytes, key_id: str) -> BotToken:
        decrypted.append(bot_id)
        return registry.decrypt(bot_id, blob, key_id)

    host = FakeHost(settings, list(range(SHARDS)))
    feed = ChangeFeed(pool, 10.0)
    return host, feed, decrypted, Reconciler(host, feed, decrypt)  # type: ignore[arg-type]


async def test_changes_come_by_cursor_and_deletes_by_tombstone(
    world: tuple[Settings, asyncpg.Pool, Registry],
) -> None:
    settings, pool, registry = world
    await registry.add_many([(token(i), f"bot{i}") for i in range(1, 9)])
    host, feed, decrypted, rec = reconciler(settings, pool, registry)
    await rec.pass_once()
    assert sorted(host.fleet.specs) == list(range(1, 9))
    assert host.fleet.specs[5].token.reveal() == token(5).reveal()
    assert sorted(decrypted) == list(range(1, 9))

    decrypted.clear()
    await rec.pass_once()
    assert rec.stats.full == 1 and rec.stats.changed == 1 and rec.stats.rows_read == 8
    assert len(host.fleet.plans) == 1 and decrypted == []

    await registry.update(2, settings={"ratelimit": {"per_bot": {"limit": 5}}})
    assert await registry.remove(3)
    await registry.set_state(4, BotState.PAUSED)
    await rec.pass_once()
    plan = host.fleet.plans[-1]
    assert [s.bot_id for s in plan.retune] == [2]
    assert sorted(plan.stop) == [3, 4]
    assert decrypted == []  # a retune reuses the running token
    assert host.desired == 6
    removed = await pool.fetchval("SELECT count(*) FROM bots_removed WHERE id = 3")
    assert removed == 1

    await registry.set_state(4, BotState.ACTIVE)
    await registry.add(token(3))  # re-registered after removal
    await rec.pass_once()
    assert sorted(s.bot_id for s in host.fleet.plans[-1].start) == [3, 4]
    assert sorted(decrypted) == [3, 4]
    assert sorted(host.fleet.specs) == list(range(1, 9))


async def test_the_usage_meter_learns_each_bots_owner_from_the_rows_read(
    world: tuple[Settings, asyncpg.Pool, Registry],
) -> None:
    settings, pool, registry = world
    alice, _ = await create_owner(registry, "alice")
    await registry.add(token(1), owner_id=alice.id)
    await registry.add(token(2))  # the admin's: no owner
    host, feed, _, _ = reconciler(settings, pool, registry)
    told: dict[int, int | None] = {}
    rec = Reconciler(host, feed, registry.decrypt, know_owner=told.__setitem__)
    await rec.pass_once()
    assert told == {1: alice.id, 2: None}
    bob, _ = await create_owner(registry, "bob")
    await pool.execute("UPDATE bots SET owner_id = $1 WHERE id = 2", bob.id)
    await rec.pass_once()  # by change: the moved bot's new owner
    assert told == {1: alice.id, 2: bob.id}


async def test_cursor_advances_on_every_write_and_filters_shards(
    world: tuple[Settings, asyncpg.Pool, Registry],
) -> None:
    _, pool, registry = world
    feed = ChangeFeed(pool, 10.0)
    await registry.add_many([(token(i), "") for i in range(1, 9)])
    start = await feed.cursor()
    assert (await feed.since(start, [0, 1, 2, 3], SHARDS)).rows == []
    await registry.update(5, settings={"a": 1})
    await registry.update(6, settings={"a": 1})
    await pool.execute("UPDATE bots SET username = 'renamed' WHERE id = 7")  # any write
    changes = await feed.since(start, [1, 2], SHARDS)  # 5 % 4 = 1, 6 % 4 = 2, 7 % 4 = 3
    assert sorted(r.id for r in changes.rows) == [5, 6]
    assert changes.cursor > start
    assert changes.cursor <= await feed.cursor()
    later = await feed.since(changes.cursor, [1, 2], SHARDS)
    assert later.rows == [] and later.removed == []
    await registry.remove(6)
    gone = await feed.since(changes.cursor, [1, 2], SHARDS)
    assert gone.removed == [6] and gone.rows == []


async def test_a_hint_queries_just_its_bots(
    world: tuple[Settings, asyncpg.Pool, Registry],
) -> None:
    settings, pool, registry = world
    await registry.add_many([(token(i), "") for i in range(1, 9)])
    host, feed, decrypted, rec = reconciler(settings, pool, registry)
    await rec.pass_once()
    decrypted.clear()
    await registry.set_state(6, BotState.PAUSED)
    await registry.update(7, settings={"b": 2})  # changed, but not hinted
    rec.hint([6])
    await rec.pass_once()
    assert rec.stats.targeted == 1 and rec.stats.rows_read == 8 + 1
    assert host.fleet.plans[-1].stop == [6] and not host.fleet.plans[-1].retune
    await rec.pass_once()  # the timer's pass picks up the rest by change
    assert [s.bot_id for s in host.fleet.plans[-1].retune] == [7]
    assert decrypted == []


async def test_tombstones_older_than_a_day_are_pruned_on_the_next_delete(
    world: tuple[Settings, asyncpg.Pool, Registry],
) -> None:
    _, pool, registry = world
    await registry.add_many([(token(i), "") for i in range(1, 4)])
    await registry.remove(1)
    await pool.execute("UPDATE bots_removed SET removed_at = now() - interval '2 days'")
    await registry.remove(2)
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM bots_removed ORDER BY id")]
    assert ids == [2]


async def test_a_pooled_connection_cut_by_a_postgres_outage_is_logged_not_raised(
    world: tuple[Settings, asyncpg.Pool, Registry],
) -> None:
    """A cut leaves idle pooled connections dead; the next query on one raises asyncpg's
    InterfaceError (ConnectionDoesNotExistError), not a PostgresError. A pass must log
    it as one line, not crash the worker with a traceback (issue 9)."""
    from tests.context_helpers import TcpProxy, postgres_address, via_proxy

    settings, _, registry = world
    assert settings.database.url is not None
    database_url = settings.database.url.get_secret_value()
    proxy = TcpProxy(postgres_address(database_url))
    await proxy.start()
    dsn = via_proxy(database_url, proxy.port)
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=1, timeout=5, command_timeout=5)
    try:
        await registry.add_many([(token(1), "bot1")])
        host, _, _, rec = reconciler(settings, pool, registry)
        await rec.pass_once()  # the pool now holds one idle connection
        assert sorted(host.fleet.specs) == [1]
        # cut the connection in the middle of a pass's query (held up by a lock)
        locker = await asyncpg.connect(settings.database.url.get_secret_value(), timeout=10)
        try:
            lock = locker.transaction()
            await lock.start()
            await locker.execute("LOCK TABLE bots IN ACCESS EXCLUSIVE MODE")
            passing = asyncio.create_task(rec.pass_once())
            async with asyncio.timeout(10):
                while not await locker.fetchval(  # noqa: ASYNC110 - another session's state
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                ):
                    await asyncio.sleep(0.02)
            await proxy.stop()
            await passing  # must not raise
            await lock.rollback()
        finally:
            await locker.close(timeout=10)
        await proxy.start()
        await registry.add_many([(token(2), "bot2")])
        await rec.pass_once()
        assert sorted(host.fleet.specs) == [1, 2]
    finally:
        await pool.close()
        await proxy.stop()
