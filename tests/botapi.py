"""A `BotApi` as a worker builds it (JSON calls through the send pool, aiohttp only for
multipart), for tests of the Bot API seam and the actor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bots.telegram.api import BotApi
from bots.telegram.longpoll import DIRECT
from bots.telegram.sessions import SessionPool, open_session_pool
from bots.telegram.token import BotToken
from config import Settings
from ratelimit import BotLimiter, Limits


@asynccontextmanager
async def open_pools() -> AsyncIterator[SessionPool]:
    """A worker's pools on the default settings (direct, 128 connections a server)."""
    async with open_session_pool(Settings()) as pools:
        yield pools


def worker_api(
    pools: SessionPool,
    base: str,
    token: str | BotToken,
    *,
    retries: int = 3,
    request_timeout: float = 5,
    limiter: BotLimiter | None = None,
) -> BotApi:
    return BotApi(
        pools.default,
        base,
        token if isinstance(token, BotToken) else BotToken(token),
        limiter or BotLimiter(Limits.telegram_defaults()),
        request_timeout=request_timeout,
        max_retries=retries,
        sender=pools.sender(base, DIRECT),
    )
