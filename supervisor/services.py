"""Where Redis and PostgreSQL come from: configured URLs, or private embedded servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog
from pydantic import SecretStr

from config import Settings
from ipc import keys
from ipc.messages import Reconcile, encode
from ipc.redis_client import redis_client
from supervisor.registry.bots import Registry
from supervisor.registry.migrate import migrate
from supervisor.registry.tokenbox import open_tokenbox

log = structlog.get_logger(__name__)


@asynccontextmanager
async def open_services(
    settings: Settings, *, redis: bool = True, postgres: bool = True
) -> AsyncIterator[Settings]:
    """Yield settings whose URLs point at real servers, starting embedded ones for unset URLs."""
    need_redis = redis and settings.redis.url is None
    need_pg = postgres and settings.database.url is None
    if not (need_redis or need_pg):
        yield settings
        return
    from supervisor.embedded.servers import open_embedded

    state_dir = Path(settings.state.dir).absolute()
    async with open_embedded(state_dir, redis=need_redis, postgres=need_pg) as emb:
        update: dict[str, Any] = {}
        if need_redis:
            update["redis"] = settings.redis.model_copy(update={"url": emb.redis_url})
        if need_pg:
            update["database"] = settings.database.model_copy(
                update={"url": SecretStr(emb.database_url or "")}
            )
        yield settings.model_copy(update=update)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """Every PostgreSQL pool of ours: size and timeouts from `database.*`."""
    assert settings.database.url is not None
    return await asyncpg.create_pool(
        settings.database.url.get_secret_value(),
        # no floor to restore: asyncpg would retry it with a traceback a second while
        # PostgreSQL is away; connections open on demand and idle ones are kept
        min_size=0,
        max_size=settings.database.pool_max,
        command_timeout=settings.database.timeout_s,
        timeout=settings.database.timeout_s,
    )


@asynccontextmanager
async def open_registry(
    settings: Settings, *, apply_migrations: bool = True
) -> AsyncIterator[Registry]:
    """A pool on the configured database, migrated, wrapped in a Registry."""
    pool = await create_pool(settings)
    try:
        if apply_migrations:
            async with pool.acquire(timeout=settings.database.timeout_s) as conn:
                await migrate(conn)
        yield Registry(pool, open_tokenbox(settings), settings.database.timeout_s)
    finally:
        await pool.close()


async def publish_hint(
    settings: Settings, bots: tuple[int, ...] = (), client: aioredis.Redis | None = None
) -> bool:
    """Tell workers to reconcile now. A lost hint only delays the change by one interval.

    Long-lived processes (master, worker) pass their client; a CLI run opens one here.
    """
    assert settings.redis.url is not None
    own = client is None
    if client is None:
        client = redis_client(settings.redis.url, settings.redis.timeout_s, settings.redis.pool_max)
    try:
        await client.publish(
            keys.control_channel(settings.redis.prefix), encode(Reconcile(bots=bots))
        )
        return True
    except (aioredis.RedisError, OSError) as exc:
        log.warning(
            "hint.not_sent",
            error=type(exc).__name__,
            effect="workers pick the change up at their next reconcile",
        )
        return False
    finally:
        if own:
            await client.aclose()
