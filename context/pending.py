"""Writes held in memory while Redis is down, and how they are replayed when it is back.

A chat with pending writes is served from `PendingChat.ctx` (the state every queued
change has been applied to) and is never evicted. Replaying picks the cheapest
correct write for what Redis holds by then:

* Redis still has the version our memory state grew from (or the version of the write
  whose answer we lost, or nothing at all — it restarted empty): write our state as is.
* Someone else wrote meanwhile: apply the queued changes, in order, on their state.

Either way it is a compare-and-set, so a writer racing the replay is retried on fresh
state, never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

from context.model import NAMESPACES, Changes, Context, apply_changes
from context.redis_io import RedisContexts, new_version

#: A replay losing this many races in a row gives up until the next recovery pass.
REPLAY_ATTEMPTS: Final = 50

ALL: Final = frozenset(NAMESPACES)


class ReplayContended(Exception):
    """Other writers won every attempt; the chat stays pending for the next pass."""


@dataclass(slots=True)
class PendingChat:
    ctx: Context
    #: The Redis version `ctx` was derived from ("" = none known).
    base_version: str
    #: The version of a write whose answer was lost: it may have landed ("" = none).
    maybe_landed: str = ""
    changes: list[Changes] = field(default_factory=list)


async def replay(redis: RedisContexts, pending: PendingChat, max_messages: int) -> Context:
    """Write one chat's pending state to Redis. Raises REDIS_DOWN errors or ReplayContended."""
    fresh = await redis.fetch(pending.ctx.bot_id, pending.ctx.chat_id)
    ours = {pending.base_version, pending.maybe_landed, ""}
    for _ in range(REPLAY_ATTEMPTS):
        if fresh.version in ours:
            new = pending.ctx
        else:
            new = fresh
            present = {m.key for m in fresh.messages}
            for changes in pending.changes:
                if changes.append:
                    # a writer that rebuilt the chat from PostgreSQL already has the rows
                    # we queued there: add each message once
                    fresh_rows = tuple(m for m in changes.append if m.key not in present)
                    changes = replace(changes, append=fresh_rows)
                new = apply_changes(new, changes, max_messages)
        ok, fresh = await redis.write(fresh.version, new, ALL, new_version())
        if ok:
            return fresh
        ours = {""}  # someone else wrote since: from now on only their state counts
    raise ReplayContended(f"bot {pending.ctx.bot_id} chat {pending.ctx.chat_id}")
