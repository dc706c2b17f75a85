"""`open_context_store`: the store with its two background tasks, opened and drained."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import asyncpg
import redis.asyncio as aioredis
import structlog

from config import Settings
from context.durable import DurableLog
from context.redis_io import RedisContexts, Ttls
from context.stats import StoreConfig
from context.store import ContextStore
from ipc.redis_client import redis_client

log = structlog.get_logger(__name__)

#: How long closing waits for PostgreSQL to take the queued rows and states.
CLOSE_TIMEOUT_S: Final = 5.0
#: How long closing tries to replay held writes into a Redis that answers again. Short:
#: they are in PostgreSQL's queue too, and a load finds Redis stale and rebuilds.
CLOSE_REPLAY_S: Final = 1.0
RECOVERY_TASK: Final = "context:redis-recovery"


@asynccontextmanager
async def open_context_store(
    settings: Settings,
    *,
    redis: aioredis.Redis | None = None,
    pool: asyncpg.Pool | None = None,
    **overrides: int | float,
) -> AsyncIterator[ContextStore]:
    """Runs in the worker's loop. Uses the worker's Redis client and pool when given
    (one each per worker), else opens its own and closes them after."""
    config = StoreConfig.from_settings(settings, **overrides)
    own_redis = redis is None
    own_pool = pool is None
    if redis is None:
        assert settings.redis.url is not None, "redis.url must be set (or pass a client)"
        redis = redis_client(settings.redis.url, settings.redis.timeout_s, settings.redis.pool_max)
    if pool is None:
        assert settings.database.url is not None, "database.url must be set (or pass a pool)"
        pool = await asyncpg.create_pool(
            settings.database.url.get_secret_value(),
            min_size=0,  # no floor to restore while PostgreSQL is away (see services.py)
            max_size=settings.database.pool_max,
            command_timeout=settings.database.timeout_s,
            timeout=settings.database.timeout_s,
        )
    ttls = Ttls(config.dialog_ttl_s * 1000, config.messages_ttl_s * 1000, config.prefs_ttl_s * 1000)
    durable = DurableLog(pool, timeout_s=config.postgres_timeout_s)
    store = ContextStore(RedisContexts(redis, config.prefix, ttls), durable, config)
    stop = asyncio.Event()
    tasks = {
        asyncio.create_task(durable.run(stop), name="context:durable"),
        asyncio.create_task(store.recover_forever(stop), name=RECOVERY_TASK),
    }
    try:
        yield store
    finally:
        await asyncio.shield(_close(store, durable, stop, tasks))
        if own_pool:
            await pool.close()
        if own_redis:
            await redis.aclose()


async def _close(
    store: ContextStore, durable: DurableLog, stop: asyncio.Event, tasks: set[asyncio.Task[None]]
) -> None:
    """Let PostgreSQL (the source of truth) take every queued row and state, replay what
    Redis still owes if it answers at once, then stop. Never waits on a hung Redis for
    longer than CLOSE_REPLAY_S."""
    if store.health()["pending_redis_writes"] and not store.redis_down:
        try:
            async with asyncio.timeout(CLOSE_REPLAY_S):
                await store.replay_pending()
        except TimeoutError:
            pass
    if not await durable.wait_idle(CLOSE_TIMEOUT_S):
        log.warning("context.flush_timed_out", queued=len(durable))
    stop.set()
    for task in tasks:  # the recovery task may be probing a hung Redis: never wait for it
        if task.get_name() == RECOVERY_TASK:
            task.cancel(msg="context store closing")
    _, running = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
    for task in running:
        task.cancel(msg="context store closing")
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("context.task_failed", task=task.get_name(), error=repr(task.exception()))
    health = store.health()
    if health["pending_durable_writes"]:
        log.error("context.closed_with_unwritten", **health)
    elif health["pending_redis_writes"]:
        # PostgreSQL has them: the next load finds Redis older and rebuilds from it
        log.info("context.closed_redis_behind", **health)
