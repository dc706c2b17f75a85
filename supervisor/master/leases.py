"""The master's lease keeper: holds this host's share of the shards, by leases in PostgreSQL.

One round every `leases.renew_s`: renew what we hold (and say we are alive), then move
towards our share (1/N of the shards, N = hosts seen within one TTL). Too many: hand
the extra shards over gracefully — our workers stop their bots and save watermarks
(heartbeat epoch), only then is the lease released. Too few: take free or expired
shards, raise their fences in Redis, then give them to the workers.

Self-fencing: after a renewal at lease-clock time t0 our leases are surely ours until
t0 + ttl - margin (PostgreSQL expires them at its now() + ttl, which is later). Past that
deadline without a renewal this host stops every bot — unless it was alone at its last
renewal: then nobody can have taken them, and a PostgreSQL outage must not stop a
single host's bots (the Redis fences still refuse its writes if a newcomer took over,
and the first renewal or fence check after that stops them).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Mapping
from typing import Protocol

import asyncpg
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from config import Settings
from config.logthrottle import Throttle
from ipc import keys
from ipc.fencing import lease_clock, raise_fences
from supervisor.registry import leases as store

log = structlog.get_logger(__name__)

#: fences are raised on every take; again every this many rounds (Redis lost its data)
FENCE_REFRESH_ROUNDS = 10
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class LeaseHolder(Protocol):
    """What the keeper needs of the master (supervisor/master/arbiter.py)."""

    #: stopping: take nothing more (everything held is released at exit)
    draining: bool

    def set_owned(self, shards: frozenset[int]) -> int: ...

    def applied(self, epoch: int) -> bool: ...

    def send_leases(self, epochs: Mapping[int, int], valid_until: float) -> None: ...

    def lease_health(self) -> dict[str, object]: ...


class LeaseKeeper:
    """Runs in the master's loop; `run()` is one supervised task beside `Master.run()`."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, http: str) -> None:
        self.settings = settings
        self.host = settings.host.id
        self.total = settings.workers.shards
        self._redis = redis
        self._http = http
        self._pool: asyncpg.Pool | None = None
        self.held: dict[int, int] = {}  # shard -> epoch, as PostgreSQL last said
        self.owned: frozenset[int] = frozenset()  # what our workers run
        self.releasing: frozenset[int] = frozenset()
        self._release_epoch = 0
        self.valid_until = -math.inf
        self.alone = True
        self.hosts: list[str] = []
        self.fenced = False
        self._next_expiry: float | None = None  # lease clock
        self._fences: dict[int, int] = {}  # shard -> epoch raised in Redis
        self.rounds = 0
        self.statements = 0
        self._holder: LeaseHolder | None = None
        self._throttle = Throttle(30.0)

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """A pool of its own (one connection): admin traffic never delays a renewal. No
        floor (min_size 0): asyncpg would log a traceback per retry of it while PostgreSQL
        is away. Raises store.ShardCountMismatch."""
        db = self.settings.database
        assert db.url is not None
        self._pool = await asyncpg.create_pool(
            db.url.get_secret_value(),
            min_size=0,
            max_size=1,
            timeout=db.timeout_s,
            command_timeout=db.timeout_s,
        )
        try:
            async with self._pool.acquire(timeout=db.timeout_s) as conn:
                await store.ensure_cluster(conn, self.total, db.timeout_s)
        except BaseException:
            await self._pool.close()
            raise

    async def start(self) -> frozenset[int]:
        """The first round, before the workers spawn: a lone host takes every shard at
        once. Returns the shards to run."""
        began = lease_clock()
        await self._round(first=True)
        await self._raise_fences()
        self.owned = self._runnable()
        log.info(
            "leases.started",
            host=self.host,
            shards=len(self.owned),
            hosts=len(self.hosts),
            seconds=round(lease_clock() - began, 4),  # all a single host's start-up pays
        )
        return self.owned

    def attach(self, holder: LeaseHolder) -> None:
        self._holder = holder
        holder.send_leases(self.held, self._worker_deadline())

    async def run(self) -> None:
        """Forever: a round every renew_s; in between, fence at the deadline if it comes."""
        s = self.settings.leases
        while True:
            wait = s.renew_s
            if self._next_expiry is not None:
                # a host that stopped renewing drops out then: take its shards at once
                wait = min(wait, max(0.0, self._next_expiry - lease_clock()) + 0.05)
            if not self.alone and self.owned:
                wait = max(0.0, min(wait, self.valid_until - lease_clock()))
            await asyncio.sleep(wait)
            if not self.alone and self.owned and lease_clock() >= self.valid_until:
                self._fence("lease not renewed in time")
            try:
                await self._round()
            except _ERRORS as exc:
                self._quiet_if_alone("leases.renew_failed", exc)
                await self._check_fences()
                continue
            try:
                await self._raise_fences()
            except (RedisError, OSError, TimeoutError) as exc:
                self._quiet_if_alone("leases.fence_failed", exc)
            self._apply()

    def _quiet_if_alone(self, event: str, exc: BaseException) -> None:
        """A lone host's bots go on through an outage (nobody can take its shards, and the
        reconciler or the progress flusher already say the server is away): DEBUG."""
        if self.alone:
            log.debug(event, error=type(exc).__name__)
        else:
            self._throttle.warning(log, event, error=type(exc).__name__)

    async def _raise_fences(self) -> None:
        """Raise the Redis fence of every shard taken since the last success (all of them
        every FENCE_REFRESH_ROUNDS rounds, in case Redis lost them). Raises Redis errors."""
        due = {s: e for s, e in self.held.items() if self._fences.get(s) != e}
        if self.rounds % FENCE_REFRESH_ROUNDS == 0:
            due = dict(self.held)
        if due:
            timeout = self.settings.redis.timeout_s
            await raise_fences(self._redis, self.settings.redis.prefix, due, timeout)
            self._fences.update(due)

    def _runnable(self) -> frozenset[int]:
        """Held, fenced in Redis (no worker of ours writes before), not being handed over."""
        return frozenset(s for s, e in self.held.items() if self._fences.get(s) == e) - (
            self.releasing
        )

    async def close(self) -> None:
        """At exit, after the workers stopped: release everything so others take it now."""
        if self._pool is None:
            return
        timeout = self.settings.database.timeout_s
        try:
            async with self._pool.acquire(timeout=timeout) as conn:
                released = await store.leave(conn, self.host, timeout)
            log.info("leases.released", host=self.host, shards=released)
        except _ERRORS as exc:
            log.warning("leases.release_failed", error=type(exc).__name__, expire_in=self.ttl)
        finally:
            with contextlib.suppress(*_ERRORS):
                async with asyncio.timeout(timeout):
                    await self._pool.close()

    @property
    def ttl(self) -> float:
        return self.settings.leases.ttl_s

    # -- one round --------------------------------------------------------------------------

    async def _round(self, first: bool = False) -> None:
        assert self._pool is not None
        s, timeout = self.settings.leases, self.settings.database.timeout_s
        t0 = lease_clock()
        health = self._holder.lease_health() if self._holder is not None else {}
        async with self._pool.acquire(timeout=timeout) as conn:
            if first:
                # leases an earlier master of this host id left (the master lock says it
                # is gone): free them, then take our share with new epochs like anyone
                await store.release(conn, self.host, None, timeout)
            renewal = await store.renew(
                conn,
                self.host,
                http=self._http,
                pid=os.getpid(),
                ttl_s=s.ttl_s,
                health=health,
                timeout=timeout,
            )
            self.statements += 5  # BEGIN, upsert, update, select, COMMIT
            self.rounds += 1
            self.held, self.hosts = renewal.held, renewal.hosts
            self.valid_until = t0 + s.ttl_s - s.margin_s
            self.alone = renewal.hosts == [self.host]
            self._next_expiry = (
                None if renewal.next_expiry_s is None else t0 + renewal.next_expiry_s
            )
            target = store.share(renewal.hosts, self.host, self.total)
            if self.releasing:
                await self._finish_release(conn)
            elif len(self.held) > target:
                self._start_release(len(self.held) - target)
            elif len(self.held) < target and not self._draining():
                got = await store.acquire(
                    conn, self.host, limit=target - len(self.held), ttl_s=s.ttl_s, timeout=timeout
                )
                self.statements += 3
                if got:
                    self.held.update(got)  # run once their fences stand (_raise_fences)
                    log.info("leases.taken", shards=len(got), holding=len(self.held))

    def _draining(self) -> bool:
        return self._holder is not None and self._holder.draining

    def _start_release(self, count: int) -> None:
        """Hand over the highest shards: our workers stop them first (Assign), the lease
        goes once their heartbeats say so (`_finish_release`)."""
        extra = frozenset(sorted(self.held)[-count:])
        self.releasing = extra
        if self._holder is not None:
            self.owned = self._runnable()
            self._release_epoch = self._holder.set_owned(self.owned)
        log.info("leases.handing_over", shards=len(extra), hosts=len(self.hosts))

    async def _finish_release(self, conn: asyncpg.Connection) -> None:
        if self._holder is not None and not self._holder.applied(self._release_epoch):
            return  # bots of those shards still stopping
        timeout = self.settings.database.timeout_s
        await store.release(conn, self.host, sorted(self.releasing), timeout)
        self.statements += 3
        for shard in self.releasing:
            self.held.pop(shard, None)
        log.info("leases.handed_over", shards=len(self.releasing), holding=len(self.held))
        self.releasing = frozenset()

    def _apply(self) -> None:
        """Tell the workers the renewed deadline and epochs, then what to run."""
        if self._holder is None:
            return
        self.fenced = False
        self._holder.send_leases(self.held, self._worker_deadline())
        owned = self._runnable()
        if owned != self.owned:
            lost = self.owned - owned
            if lost:
                log.warning("leases.lost", shards=len(lost))
            self.owned = owned
            self._holder.set_owned(owned)

    def _worker_deadline(self) -> float:
        """Until when workers may act (lease clock): no deadline while alone."""
        return math.inf if self.alone else self.valid_until

    def _fence(self, reason: str) -> None:
        """Stop every bot now: our leases may lapse before we could renew them."""
        if self._holder is None or self.fenced:
            return
        log.warning("leases.self_fenced", reason=reason, shards=len(self.owned))
        self.fenced = True
        self.owned = frozenset()
        self.held = {}
        self.releasing = frozenset()
        self._holder.set_owned(self.owned)

    async def _check_fences(self) -> None:
        """PostgreSQL unreachable: a shard whose Redis fence passed our epoch was taken."""
        if not self.held:
            return
        shards = sorted(self.held)
        prefix = self.settings.redis.prefix
        try:
            async with asyncio.timeout(self.settings.redis.timeout_s):
                values = await self._redis.mget([keys.fence_key(prefix, s) for s in shards])
        except (RedisError, OSError, TimeoutError):
            return
        taken = [s for s, v in zip(shards, values, strict=True) if v and int(v) > self.held[s]]
        if taken:
            for shard in taken:
                self.held.pop(shard)
            self._apply()
