"""One master per registry and host id: a PostgreSQL session advisory lock.

`botvisor run` takes the lock on a connection of its own and keeps it (and so the lock)
until it exits; PostgreSQL releases it when that connection ends, even after a SIGKILL.
The holder writes its pid, HTTP address and start time to `masters`, so a second `run`
can name the one that runs. Different host ids (other machines on the same database)
take different locks.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

log = structlog.get_logger(__name__)

#: first half of the two-key advisory lock: "botm" (the migrations use "botv")
LOCK_CLASS = 0x626F746D


@dataclass(frozen=True, slots=True)
class Holder:
    host: str
    pid: int
    http: str
    started_at: datetime


class AlreadyRunning(Exception):
    """Another master holds this host id's lock; `holder` is None if it wrote no row yet."""

    def __init__(self, host: str, holder: Holder | None) -> None:
        super().__init__(host)
        self.host, self.holder = host, holder


def lock_key(host: str) -> int:
    """The host id as a signed 32-bit int (the second half of the advisory lock)."""
    return zlib.crc32(host.encode()) - 2**31


async def holder(conn: asyncpg.Connection, host: str, timeout: float) -> Holder | None:
    row = await conn.fetchrow(
        "SELECT host, pid, http, started_at FROM masters WHERE host = $1", host, timeout=timeout
    )
    return None if row is None else Holder(**dict(row))


@asynccontextmanager
async def hold_master_lock(
    dsn: str, host: str, http: str, timeout: float
) -> AsyncIterator[asyncpg.Connection]:
    """Hold `host`'s master lock while inside; raises AlreadyRunning if another has it."""
    conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout)
    try:
        got = await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, lock_key(host), timeout=timeout
        )
        if not got:
            raise AlreadyRunning(host, await holder(conn, host, timeout))
        await conn.execute(
            "INSERT INTO masters (host, pid, http, started_at) VALUES ($1, $2, $3, now())"
            " ON CONFLICT (host) DO UPDATE SET pid = $2, http = $3, started_at = now()",
            host,
            os.getpid(),
            http,
            timeout=timeout,
        )
        log.info("master.lock_held", host=host, pid=os.getpid())
        try:
            yield conn
        finally:
            with suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                await conn.execute(
                    "DELETE FROM masters WHERE host = $1 AND pid = $2",
                    host,
                    os.getpid(),
                    timeout=timeout,
                )
    finally:
        await conn.close(timeout=timeout)
