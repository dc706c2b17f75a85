"""Shard leases in PostgreSQL: which host holds which shard, until when, at what epoch.

Every change is one transaction on row locks (`FOR UPDATE SKIP LOCKED` to take free
shards, so two hosts taking at once never wait on or collide with each other). Expiry
is PostgreSQL's clock (`now()`), never a host's: hosts with skewed clocks agree on it.
The epoch grows on every change of holder; it is the fencing token (ipc/fencing.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson


class ShardCountMismatch(Exception):
    """The configured shard count differs from the one stored for this cluster."""

    def __init__(self, stored: int, configured: int) -> None:
        super().__init__(f"cluster has {stored} shards, configured {configured}")
        self.stored, self.configured = stored, configured


class HostsRunning(Exception):
    """`shards migrate` while hosts still hold leases or renew their presence."""

    def __init__(self, hosts: list[str]) -> None:
        super().__init__(", ".join(hosts))
        self.hosts = hosts


@dataclass(frozen=True, slots=True)
class Renewal:
    """One round's outcome: the shards this host still holds (shard -> epoch) and the
    hosts alive (seen within one TTL, not leaving), sorted."""

    held: dict[int, int]
    hosts: list[str]
    #: seconds until the first other host drops out (its presence and leases expire)
    next_expiry_s: float | None = None


@dataclass(frozen=True, slots=True)
class LeaseRow:
    shard: int
    host: str | None
    epoch: int
    expires_in_s: float | None


@dataclass(frozen=True, slots=True)
class HostRow:
    host: str
    http: str
    pid: int
    seen_age_s: float
    alive: bool
    leaving: bool
    ready: bool
    reason: str
    bots: dict[str, Any]
    shards: list[int]


def share(hosts: list[str], host: str, shards: int) -> int:
    """How many shards `host` should hold: an even split, the first hosts (sorted) take
    one more when it does not divide. Every host computes the same numbers."""
    if host not in hosts:
        return 0
    n = len(hosts)
    return shards // n + (1 if hosts.index(host) < shards % n else 0)


async def ensure_cluster(conn: asyncpg.Connection, shards: int, timeout: float) -> int:
    """Store the shard count on first start (one lease row per shard); later starts must
    configure the same. Raises ShardCountMismatch."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO cluster (shards) VALUES ($1) ON CONFLICT (id) DO NOTHING",
            shards,
            timeout=timeout,
        )
        stored: int = await conn.fetchval("SELECT shards FROM cluster FOR SHARE", timeout=timeout)
        if stored != shards:
            raise ShardCountMismatch(stored, shards)
        await conn.execute(
            "INSERT INTO shard_leases (shard) SELECT generate_series(0, $1 - 1)"
            " ON CONFLICT (shard) DO NOTHING",
            shards,
            timeout=timeout,
        )
    return stored


async def renew(
    conn: asyncpg.Connection,
    host: str,
    *,
    http: str,
    pid: int,
    ttl_s: float,
    health: dict[str, Any],
    timeout: float,
) -> Renewal:
    """Say we are alive, extend every lease we still hold, read who is alive."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO lease_hosts (host, http, pid, seen_at, ready, reason, bots)"
            " VALUES ($1, $2, $3, now(), $4, $5, $6::jsonb) ON CONFLICT (host) DO UPDATE SET"
            " http = $2, pid = $3, seen_at = now(), leaving = false, ready = $4,"
            " reason = $5, bots = $6::jsonb",
            host,
            http,
            pid,
            bool(health.get("ready")),
            str(health.get("reason", "")),
            orjson.dumps(health.get("bots", {})).decode(),
            timeout=timeout,
        )
        rows = await conn.fetch(
            "UPDATE shard_leases SET expires_at = now() + make_interval(secs => $2)"
            " WHERE host = $1 AND expires_at > now() RETURNING shard, epoch",
            host,
            ttl_s,
            timeout=timeout,
        )
        hosts = await conn.fetch(
            "SELECT host, extract(epoch FROM seen_at + make_interval(secs => $1) - now())::float8"
            " AS left_s FROM lease_hosts WHERE NOT leaving"
            " AND seen_at > now() - make_interval(secs => $1) ORDER BY host",
            ttl_s,
            timeout=timeout,
        )
    others = [r["left_s"] for r in hosts if r["host"] != host]
    return Renewal(
        {r["shard"]: r["epoch"] for r in rows},
        [r["host"] for r in hosts],
        min(others) if others else None,
    )


async def acquire(
    conn: asyncpg.Connection,
    host: str,
    *,
    limit: int,
    ttl_s: float,
    timeout: float,
) -> dict[int, int]:
    """Take up to `limit` free or expired shards, each with a new epoch. Returns
    shard -> epoch of those taken."""
    if limit <= 0:
        return {}
    async with conn.transaction():
        rows = await conn.fetch(
            "WITH free AS (SELECT shard FROM shard_leases"
            "  WHERE host IS NULL OR expires_at <= now()"
            "  ORDER BY shard LIMIT $2 FOR UPDATE SKIP LOCKED)"
            " UPDATE shard_leases l SET host = $1, epoch = l.epoch + 1, acquired_at = now(),"
            "  expires_at = now() + make_interval(secs => $3)"
            " FROM free WHERE l.shard = free.shard RETURNING l.shard, l.epoch",
            host,
            limit,
            ttl_s,
            timeout=timeout,
        )
    return {r["shard"]: r["epoch"] for r in rows}


async def release(
    conn: asyncpg.Connection, host: str, shards: list[int] | None, timeout: float
) -> int:
    """Give shards up (None: all of ours) so another host takes them at once."""
    async with conn.transaction():
        result = await conn.execute(
            "UPDATE shard_leases SET host = NULL, expires_at = '-infinity'"
            " WHERE host = $1 AND ($2::int[] IS NULL OR shard = ANY($2::int[]))",
            host,
            shards,
            timeout=timeout,
        )
    return int(result.split()[-1])


async def leave(conn: asyncpg.Connection, host: str, timeout: float) -> int:
    """A host going away: release every lease and forget its presence, in one go."""
    async with conn.transaction():
        released = await release(conn, host, None, timeout)
        await conn.execute("DELETE FROM lease_hosts WHERE host = $1", host, timeout=timeout)
    return released


async def leases(conn: asyncpg.Connection | asyncpg.Pool, timeout: float) -> list[LeaseRow]:
    rows = await conn.fetch(
        "SELECT shard, host, epoch, CASE WHEN host IS NULL THEN NULL"
        " ELSE extract(epoch FROM expires_at - now())::float8 END AS expires_in_s"
        " FROM shard_leases ORDER BY shard",
        timeout=timeout,
    )
    return [LeaseRow(**dict(r)) for r in rows]


async def hosts(
    conn: asyncpg.Connection | asyncpg.Pool, ttl_s: float, timeout: float
) -> list[HostRow]:
    """Every host known to the cluster with the shards it holds now (unexpired)."""
    rows = await conn.fetch(
        "SELECT h.host, h.http, h.pid, h.leaving, h.ready, h.reason, h.bots,"
        " extract(epoch FROM now() - h.seen_at)::float8 AS seen_age_s,"
        " coalesce(array_agg(l.shard ORDER BY l.shard)"
        "   FILTER (WHERE l.shard IS NOT NULL), '{}') AS shards"
        " FROM lease_hosts h LEFT JOIN shard_leases l"
        "  ON l.host = h.host AND l.expires_at > now()"
        " GROUP BY h.host ORDER BY h.host",
        timeout=timeout,
    )
    return [
        HostRow(
            host=r["host"],
            http=r["http"],
            pid=r["pid"],
            seen_age_s=round(r["seen_age_s"], 2),
            alive=r["seen_age_s"] < ttl_s and not r["leaving"],
            leaving=r["leaving"],
            ready=r["ready"],
            reason=r["reason"],
            bots=orjson.loads(r["bots"]) if isinstance(r["bots"], str) else dict(r["bots"]),
            shards=list(r["shards"]),
        )
        for r in rows
    ]


async def stored_shards(conn: asyncpg.Connection | asyncpg.Pool, timeout: float) -> int | None:
    value: int | None = await conn.fetchval("SELECT shards FROM cluster", timeout=timeout)
    return value


async def migrate_shards(
    conn: asyncpg.Connection, to: int, ttl_s: float, timeout: float
) -> tuple[int | None, int]:
    """Change the cluster's shard count while no host runs. Epochs keep growing past
    every old one, so a fence left in Redis never outranks a new lease.
    Returns (old count, new count); raises HostsRunning."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE shard_leases IN EXCLUSIVE MODE", timeout=timeout)
        running = await conn.fetch(
            "SELECT DISTINCT host FROM shard_leases WHERE host IS NOT NULL AND expires_at > now()"
            " UNION SELECT host FROM lease_hosts"
            "  WHERE seen_at > now() - make_interval(secs => $1)",
            ttl_s,
            timeout=timeout,
        )
        if running:
            raise HostsRunning(sorted(r["host"] for r in running))
        old: int | None = await conn.fetchval("SELECT shards FROM cluster", timeout=timeout)
        top: int = await conn.fetchval(
            "SELECT coalesce(max(epoch), 0) FROM shard_leases", timeout=timeout
        )
        await conn.execute("DELETE FROM shard_leases", timeout=timeout)
        await conn.execute(
            "INSERT INTO shard_leases (shard, epoch) SELECT generate_series(0, $1 - 1), $2",
            to,
            top,
            timeout=timeout,
        )
        await conn.execute(
            "INSERT INTO cluster (shards) VALUES ($1) ON CONFLICT (id) DO UPDATE SET shards = $1",
            to,
            timeout=timeout,
        )
    return old, to


def as_dict(row: HostRow | LeaseRow) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(row)
