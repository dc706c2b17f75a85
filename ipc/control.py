"""The one subscriber loop of the control channel, shared by the master and workers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import structlog

from ipc import keys
from ipc.messages import BadMessage, Message, decode

log = structlog.get_logger(__name__)


async def listen(
    redis: aioredis.Redis,
    prefix: str,
    handle: Callable[[Message], Awaitable[None]],
    on_subscribed: Callable[[], None] | None = None,
) -> None:
    """Decode every message on `{prefix}ctl` and hand it to `handle`, forever.

    Pub/sub is at-most-once: what is missed while Redis is away is gone, so a lost
    message may only delay work that a timer redoes anyway. Redis faults are retried
    with backoff; `on_subscribed` runs after every (re)subscription.
    """
    channel = keys.control_channel(prefix)
    delay = 0.5
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                delay = 0.5
                if on_subscribed is not None:
                    on_subscribed()
                while True:
                    raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if raw is None:
                        continue
                    try:
                        message = decode(raw.get("data") or b"")
                    except BadMessage as exc:
                        log.warning("control.bad_message", error=str(exc))
                        continue
                    await handle(message)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("control.redis_unavailable", error=type(exc).__name__, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
