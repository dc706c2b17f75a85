"""The inbox reader against real Redis: entries parked while their bot restarts keep
their place ahead of newer ones of the same chat."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from bots.actor.dispatch import ChatDispatcher
from bots.actor.stats import ActorStats
from bots.telegram.update import Incoming
from ipc.inbox import Inbox
from ipc.inbox_reads import Entry
from ipc.redis_client import redis_client
from supervisor.worker.inbox_reader import InboxReader

SHARDS = 4
BOT = 7_000_000_001
SHARD = BOT % SHARDS


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = redis_client(redis_url, 2.0)
    yield c
    await c.aclose()


@dataclass
class _Spec:
    mode: str = "polling"


@dataclass
class _Actor:
    """What the reader reads of a `BotActor`: its dispatcher (None while it restarts)."""

    dispatcher: ChatDispatcher | None = None
    spec: _Spec = field(default_factory=_Spec)
    started_at: float = 0.0


@dataclass
class _Handle:
    actor: _Actor


def _update(update_id: int, chat: int = 1) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {"message_id": update_id, "chat": {"id": chat, "type": "private"}},
    }


async def test_a_parked_entry_is_offered_before_a_newer_one_read_as_its_bot_starts(
    client: aioredis.Redis, key_prefix: str
) -> None:
    """Update 1 arrives while the bot restarts (parked); the bot is running again by the
    time the next read returns update 2 of the same chat: 1 is answered first."""
    inbox = Inbox(client, key_prefix, SHARDS, "w1", 2.0, 1000, 30.0)
    actor = _Actor()
    reader = InboxReader(inbox, {BOT: _Handle(actor)}, lambda: [SHARD])  # type: ignore[dict-item]
    answered: list[int] = []
    done = asyncio.Event()

    async def handle(update: Incoming) -> None:
        answered.append(update.update_id)
        if len(answered) == 2:
            done.set()

    dispatcher = ChatDispatcher(BOT, handle, ActorStats())
    real_read = inbox.read
    reads = 0

    async def read(shards: list[int], block_ms: int) -> list[Entry]:
        nonlocal reads
        reads += 1
        if reads == 2:  # update 1 is parked now; the bot starts during this read
            actor.dispatcher = dispatcher
            assert await inbox.append(BOT, [_update(2)])
        return await real_read(shards, block_ms)

    inbox.read = read  # type: ignore[method-assign]
    assert await inbox.append(BOT, [_update(1)])
    task = asyncio.create_task(reader.run(), name="test:reader")
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert answered == [1, 2]
