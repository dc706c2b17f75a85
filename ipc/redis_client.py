"""Every Redis client of ours is built here: bounded, blocking pools with timeouts.

redis-py's default pool raises `MaxConnectionsError` once its connections are all busy,
which under load (thousands of bots saving watermarks and contexts at once) reads as
"Redis is down". A `BlockingConnectionPool` instead makes the caller wait for a free
connection, up to the command timeout, so pool pressure costs latency, never an error.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

#: Used where no setting is at hand (tools, tests): small but never starving.
DEFAULT_POOL_MAX = 32


def redis_client(url: str, timeout_s: float, pool_max: int = DEFAULT_POOL_MAX) -> aioredis.Redis:
    """A client with connect, command and pool-wait timeouts always set."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_max,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    pool.connection_class = _cancel_safe(pool.connection_class)
    return aioredis.Redis(connection_pool=pool)


_SAFE: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _cancel_safe(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` with a write that never loses a cancel.

    redis-py writes a command under `asyncio.wait_for`, which on Python 3.11 drops a
    cancel that lands as the write completes (CPython gh-86296): the command returns
    normally, the task's cancel is spent, and a loop that talks to Redis (the inbox
    reader, the flushers) never ends — a worker's or a test's teardown hangs. Here a
    cancel requested during the write raises after it, and the connection, whose reply
    nobody will read, is dropped."""
    safe = _SAFE.get(base)
    if safe is not None:
        return safe

    async def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> None:
        task = asyncio.current_task()
        before = task.cancelling() if task is not None else 0
        await base.send_packed_command(self, *args, **kwargs)
        if task is not None and task.cancelling() > before:
            await self.disconnect(nowait=True)
            raise asyncio.CancelledError

    safe = type(f"CancelSafe{base.__name__}", (base,), {"send_packed_command": send_packed_command})
    _SAFE[base] = safe
    return safe
