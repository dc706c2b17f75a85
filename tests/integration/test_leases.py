"""Shard leases against real PostgreSQL and their fencing against real Redis.

Expiry is brought about by moving `expires_at` into the past (what time would do), so
no test waits for a lease to run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from argparse import Namespace
from collections.abc import AsyncIterator, Callable, Mapping

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from config import ConfigError, Settings, load_settings
from ipc import keys
from ipc.fencing import Fencing, lease_clock, raise_fences
from ipc.offsets import BotProgress, RedisProgress
from ipc.redis_client import redis_client
from supervisor.cli.shards import shards_command
from supervisor.exitcodes import ExitCode
from supervisor.failures import OperatorError
from supervisor.master.leases import LeaseKeeper
from supervisor.master.run import open_leases
from supervisor.registry import leases as store
from supervisor.registry.migrate import migrate

SHARDS = 8
TTL = 10.0
T = 5.0  # statement timeout


async def _clean(c: asyncpg.Connection) -> None:
    await c.execute("TRUNCATE cluster, shard_leases, lease_hosts")


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The run's database with no cluster in it: emptied before and after (other tests
    start daemons there, with a shard count of their own)."""
    c = await asyncpg.connect(database_url, timeout=T)
    await migrate(c)
    await _clean(c)
    await store.ensure_cluster(c, SHARDS, T)
    yield c
    await _clean(c)
    await c.close(timeout=T)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = redis_client(redis_url, 5.0)
    yield c
    await c.aclose()


async def renew(conn: asyncpg.Connection, host: str) -> store.Renewal:
    return await store.renew(conn, host, http="h:1", pid=1, ttl_s=TTL, health={}, timeout=T)


async def expire(conn: asyncpg.Connection, host: str) -> None:
    """What TTL seconds without a renewal do to `host`'s leases and presence."""
    await conn.execute(
        "UPDATE shard_leases SET expires_at = now() - interval '1 second' WHERE host = $1", host
    )
    await conn.execute(
        "UPDATE lease_hosts SET seen_at = now() - interval '1 hour' WHERE host = $1", host
    )


async def test_a_lone_host_takes_every_shard_in_one_go_and_renews_them(
    conn: asyncpg.Connection,
) -> None:
    renewal = await renew(conn, "a")
    assert renewal.hosts == ["a"] and renewal.held == {}
    taken = await store.acquire(conn, "a", limit=SHARDS, ttl_s=TTL, timeout=T)
    assert taken == {s: 1 for s in range(SHARDS)}
    again = await renew(conn, "a")
    assert again.held == taken  # renewed, same epochs
    # nothing is left for anyone else while the leases run
    assert await store.acquire(conn, "b", limit=SHARDS, ttl_s=TTL, timeout=T) == {}


async def test_expired_leases_are_stolen_with_a_new_epoch_and_the_old_holder_loses_them(
    conn: asyncpg.Connection,
) -> None:
    await renew(conn, "a")
    await store.acquire(conn, "a", limit=SHARDS, ttl_s=TTL, timeout=T)
    await expire(conn, "a")
    renewal = await renew(conn, "b")
    assert renewal.hosts == ["b"]  # a is not counted once silent for a TTL
    stolen = await store.acquire(conn, "b", limit=SHARDS, ttl_s=TTL, timeout=T)
    assert stolen == {s: 2 for s in range(SHARDS)}
    assert (await renew(conn, "a")).held == {}  # a wakes up: nothing is its own any more


async def test_concurrent_takers_split_the_free_shards_without_overlap(
    conn: asyncpg.Connection, database_url: str
) -> None:
    other = await asyncpg.connect(database_url, timeout=T)
    try:
        a, b = await asyncio.gather(
            store.acquire(conn, "a", limit=SHARDS, ttl_s=TTL, timeout=T),
            store.acquire(other, "b", limit=SHARDS, ttl_s=TTL, timeout=T),
        )
    finally:
        await other.close(timeout=T)
    assert not set(a) & set(b)
    assert sorted([*a, *b]) == list(range(SHARDS))


async def test_released_shards_are_taken_at_once_and_share_splits_evenly(
    conn: asyncpg.Connection,
) -> None:
    await renew(conn, "a")
    await store.acquire(conn, "a", limit=SHARDS, ttl_s=TTL, timeout=T)
    renewal = await renew(conn, "b")
    assert renewal.hosts == ["a", "b"]
    assert [store.share(renewal.hosts, h, SHARDS) for h in ("a", "b")] == [4, 4]
    assert [store.share(["a", "b", "c"], h, SHARDS) for h in ("a", "b", "c")] == [3, 3, 2]
    assert await store.release(conn, "a", [4, 5, 6, 7], T) == 4
    assert sorted(await store.acquire(conn, "b", limit=4, ttl_s=TTL, timeout=T)) == [4, 5, 6, 7]
    hosts = {h.host: h for h in await store.hosts(conn, TTL, T)}
    assert hosts["a"].shards == [0, 1, 2, 3] and hosts["b"].shards == [4, 5, 6, 7]
    assert await store.leave(conn, "a", T) == 4
    assert [h.host for h in await store.hosts(conn, TTL, T)] == ["b"]


async def test_another_shard_count_is_refused_unless_migrated_while_no_host_runs(
    conn: asyncpg.Connection,
) -> None:
    with pytest.raises(store.ShardCountMismatch) as exc:
        await store.ensure_cluster(conn, 16, T)
    assert (exc.value.stored, exc.value.configured) == (SHARDS, 16)
    await renew(conn, "a")
    await store.acquire(conn, "a", limit=SHARDS, ttl_s=TTL, timeout=T)
    with pytest.raises(store.HostsRunning) as running:
        await store.migrate_shards(conn, 16, TTL, T)
    assert running.value.hosts == ["a"]
    await store.leave(conn, "a", T)
    assert await store.migrate_shards(conn, 16, TTL, T) == (SHARDS, 16)
    assert await store.ensure_cluster(conn, 16, T) == 16
    taken = await store.acquire(conn, "a", limit=16, ttl_s=TTL, timeout=T)
    assert min(taken.values()) == 2  # epochs keep growing past every old fence


async def test_fencing_refuses_progress_writes_of_a_stale_epoch(
    client: aioredis.Redis, key_prefix: str
) -> None:
    fencing = Fencing(SHARDS)
    fencing.update({3: 1}, math.inf)
    progress = RedisProgress(client, key_prefix, 5.0, fencing)
    flusher = asyncio.create_task(progress.run())
    try:
        await raise_fences(client, key_prefix, {3: 1}, 5.0)
        progress.mark(11, lambda: BotProgress(100))  # bot 11 is in shard 3
        assert await progress.flush(5)
        assert await progress.load(11) == BotProgress(100)
        # another host takes shard 3 (epoch 2); a stale raise cannot lower the fence
        await raise_fences(client, key_prefix, {3: 2}, 5.0)
        await raise_fences(client, key_prefix, {3: 1}, 5.0)
        assert await client.get(keys.fence_key(key_prefix, 3)) == b"2"
        progress.mark(11, lambda: BotProgress(200, frozenset({201})))
        assert await progress.flush(5)
        assert await progress.load(11) == BotProgress(100)  # refused: the watermark stays
        assert fencing.refused == 1
        refused = fencing.refused
        # a host that lost every shard writes nothing either
        fencing.update({}, math.inf)
        progress.mark(11, lambda: BotProgress(250))
        assert await progress.flush(5)
        assert await progress.load(11) == BotProgress(100)
        assert fencing.refused == refused + 1
        # the holder of epoch 2 writes
        fencing.update({3: 2}, math.inf)
        progress.mark(11, lambda: BotProgress(300))
        assert await progress.flush(5)
        assert await progress.load(11) == BotProgress(300)
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher


async def test_a_flush_writes_each_shards_bots_in_one_fenced_call_and_refuses_a_stale_shard(
    client: aioredis.Redis, key_prefix: str
) -> None:
    fencing = Fencing(SHARDS)
    fencing.update({s: 1 for s in range(SHARDS)}, math.inf)
    progress = RedisProgress(client, key_prefix, 5.0, fencing)
    flusher = asyncio.create_task(progress.run())
    try:
        await raise_fences(client, key_prefix, {s: 1 for s in range(SHARDS)}, 5.0)
        await raise_fences(client, key_prefix, {5: 2}, 5.0)  # shard 5 moved on
        bots = list(range(1, 2501))
        for bot_id in bots:
            progress.mark(bot_id, lambda b=bot_id: BotProgress(b * 10))  # type: ignore[misc]
        records = [(b, BotProgress(b * 10)) for b in bots]
        assert len(progress._groups(records)) == SHARDS  # one script call per shard
        assert await progress.flush(5)
        stored = await progress.load_many(bots)
        stale = [b for b in bots if b % SHARDS == 5]
        assert fencing.refused == len(stale) and progress.keys_written == len(bots) - len(stale)
        assert not set(stale) & set(stored)
        assert stored == {b: BotProgress(b * 10) for b in bots if b % SHARDS != 5}
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher


async def test_a_lapsed_deadline_fences_the_bots_until_a_renewal() -> None:
    fencing = Fencing(SHARDS)
    assert not fencing.fenced(3)  # no leases at all: a worker on its own
    fencing.update({3: 1}, lease_clock() + 60)
    assert not fencing.fenced(3) and fencing.fenced(4)  # shard 4 is not ours
    fencing.update({3: 1}, lease_clock() - 0.001)
    assert fencing.fenced(3)
    fencing.update({}, lease_clock() + 60)
    assert fencing.fenced(3)  # a renewal that says we hold nothing
    fencing.update({3: 2}, lease_clock() + 60)
    assert fencing.fenced(3, epoch=1) and not fencing.fenced(3, epoch=2)  # re-taken: a new run
    fencing.update({3: 1}, lease_clock() - 0.001)
    waiter = asyncio.create_task(fencing.wait_unfenced(3))
    await asyncio.sleep(0)
    assert not waiter.done()
    fencing.update({3: 1}, lease_clock() + 60)
    await asyncio.wait_for(waiter, 1)


async def renewal(keeper: LeaseKeeper) -> None:
    """One round as `LeaseKeeper.run` makes it: renew and rebalance, fences, tell the master."""
    await keeper._round()  # noqa: SLF001
    await keeper._raise_fences()  # noqa: SLF001
    keeper._apply()  # noqa: SLF001


class Holder:
    """The master's side of the keeper (supervisor/master/arbiter.py) without workers:
    an assignment is applied as soon as it is made."""

    def __init__(self) -> None:
        self.draining = False
        self.owned: frozenset[int] = frozenset()
        self.epoch = 0
        self.leases: dict[int, int] = {}
        self.deadline = 0.0

    def set_owned(self, shards: frozenset[int]) -> int:
        self.owned, self.epoch = shards, self.epoch + 1
        return self.epoch

    def applied(self, epoch: int) -> bool:
        return epoch <= self.epoch

    def send_leases(self, epochs: Mapping[int, int], valid_until: float) -> None:
        self.leases, self.deadline = dict(epochs), valid_until

    def lease_health(self) -> dict[str, object]:
        return {"ready": True, "reason": "ok", "bots": {"running": len(self.owned)}}


async def test_keepers_hand_shards_over_to_a_joining_host_and_back_when_it_leaves(
    conn: asyncpg.Connection,
    settings_factory: Callable[..., Settings],
    client: aioredis.Redis,
) -> None:
    settings = [
        settings_factory(host={"id": h}, workers={"shards": SHARDS, "count": 1}) for h in "ab"
    ]
    keepers = [LeaseKeeper(s, client, "h:1") for s in settings]
    holders = [Holder(), Holder()]
    a, b = keepers
    await a.open()
    await b.open()
    try:
        assert await a.start() == frozenset(range(SHARDS))  # alone: everything at once
        a.attach(holders[0])
        assert holders[0].deadline == math.inf  # alone: workers have no deadline
        assert await b.start() == frozenset()  # all taken: b waits for a handover
        b.attach(holders[1])
        await a._round()  # noqa: SLF001 - one renewal: a sees b, hands half over
        assert a.releasing == frozenset({4, 5, 6, 7})
        await renewal(a)
        assert holders[0].owned == frozenset({0, 1, 2, 3})  # its workers stop those first
        await renewal(a)  # applied: released
        assert sorted(a.held) == [0, 1, 2, 3]
        await renewal(b)
        assert holders[1].owned == frozenset({4, 5, 6, 7})
        assert holders[1].deadline < math.inf  # not alone: a deadline by our clock
        fences = await client.mget([keys.fence_key(settings[0].redis.prefix, s) for s in (0, 4)])
        assert fences == [b"1", b"2"]
    finally:
        await b.close()  # leaves: its shards are free at once
        await renewal(a)
        assert holders[0].owned == frozenset(range(SHARDS))
        await a.close()


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"BOTVISOR_HOST__ID": "no spaces"}, "host.id"),
        ({"BOTVISOR_HOST__ID": "-lead"}, "host.id"),
        ({"BOTVISOR_LEASES__RENEW_S": "8"}, "leases.renew_s"),  # not below 10 - 3
        ({"BOTVISOR_LEASES__TTL_S": "4", "BOTVISOR_LEASES__MARGIN_S": "3"}, "leases.renew_s"),
    ],
)
def test_bad_host_ids_and_lease_timings_are_refused_naming_the_key(
    environ: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ=environ)
    assert key in str(err.value)


def test_host_id_defaults_to_the_hostname() -> None:
    assert load_settings(environ={}).host.id == socket.gethostname()


async def test_a_host_configured_with_another_shard_count_refuses_to_start(
    conn: asyncpg.Connection, settings_factory: Callable[..., Settings], client: aioredis.Redis
) -> None:
    settings = settings_factory(workers={"shards": 16, "count": 1})
    with pytest.raises(OperatorError) as err:
        async with open_leases(settings, client):
            pass
    assert err.value.key == "workers.shards" and err.value.exit_status == ExitCode.CONFIG
    assert "created with 8 shards" in err.value.what
    assert "botvisor shards migrate --to 16" in err.value.todo


async def test_shards_show_lists_each_hosts_shards_and_migrate_waits_for_every_host_to_stop(
    conn: asyncpg.Connection,
    settings_factory: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_factory(workers={"shards": SHARDS, "count": 1})
    await renew(conn, "a")
    await store.acquire(conn, "a", limit=3, ttl_s=TTL, timeout=T)
    assert await shards_command(settings, Namespace(shards_command="show", json=True)) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["shards"] == SHARDS
    assert [(h["host"], h["shards"], h["alive"]) for h in shown["hosts"]] == [
        ("a", [0, 1, 2], True)
    ]
    assert await shards_command(settings, Namespace(shards_command="show", json=False)) == 0
    assert "0-2" in capsys.readouterr().out
    migrate_to = Namespace(shards_command="migrate", to=16)
    assert await shards_command(settings, migrate_to) == ExitCode.FAILURE
    assert "hosts still run on this cluster: a" in capsys.readouterr().err
    await store.leave(conn, "a", T)
    assert await shards_command(settings, migrate_to) == 0
    assert await store.stored_shards(conn, T) == 16
