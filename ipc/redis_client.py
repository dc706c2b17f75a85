"""Every Redis client of ours is built here: bounded, blocking pools with timeouts.

redis-py's default pool raises `MaxConnectionsError` once its connections are all busy,
which under load (thousands of bots saving watermarks and contexts at once) reads as
"Redis is down". A `BlockingConnectionPool` instead makes the caller wait for a free
connection, up to the command timeout, so pool pressure costs latency, never an error.
"""

from __future__ import annotations

import redis.asyncio as aioredis

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
    return aioredis.Redis(connection_pool=pool)
