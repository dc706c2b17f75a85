"""The poll loop with the durable inbox on (`bots.inbox`, ipc/inbox.py).

Every batch is appended to the bot's shard stream and the next getUpdates confirms it
at once: polling never waits for handlers, so a slow chat holds up nobody. The worker's
inbox reader (supervisor/worker/inbox_reader.py) hands the entries back to this actor's
dispatcher. If an append fails (Redis down) that batch is handled the old way: it stays
unconfirmed — the offset stays at its oldest unhandled update — until handled here.
Past the shard's backlog cap polling pauses (Telegram keeps the updates).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from bots.actor.dispatch import ChatDispatcher

#: what `poll_once` and `interruptibly` return when a stop interrupted the wait
STOPPED: Final = object()


class InboxSink(Protocol):
    """Where polled updates go when the durable inbox is on (ipc/inbox.py: Inbox)."""

    async def append(self, bot_id: int, updates: list[dict[str, Any]]) -> bool: ...

    def full(self, bot_id: int) -> bool: ...

    async def wait_room(self, bot_id: int) -> None: ...


class _Poll(Protocol):
    @property
    def poll_timeout_s(self) -> int: ...


class _Spec(Protocol):
    @property
    def bot_id(self) -> int: ...


class PollingActor(Protocol):
    """What this loop needs of `BotActor`."""

    @property
    def spec(self) -> _Spec: ...

    @property
    def poll(self) -> _Poll: ...

    @property
    def stop_requested(self) -> bool: ...

    async def poll_once(self, params: dict[str, Any]) -> list[Any] | object | None: ...

    async def interruptibly(self, aw: Awaitable[Any]) -> Any: ...


async def poll_into_inbox(
    actor: PollingActor, inbox: InboxSink, dispatcher: ChatDispatcher
) -> None:
    bot_id = actor.spec.bot_id
    start = dispatcher.watermark()  # the progress record's watermark, if any
    newest = start - 1 if start is not None else -1  # the newest update taken over
    direct: set[int] = set()  # taken the old way: unconfirmed until handled
    batch: list[Any] = []
    while not actor.stop_requested:
        fresh = [u for u in batch if isinstance(u, dict) and _uid(u) > newest]
        if fresh:
            newest = max(_uid(u) for u in fresh)
            if not await inbox.append(bot_id, fresh):
                _take_directly(dispatcher, fresh, direct)
        if actor.stop_requested:
            break  # asked during the append: no long poll nobody would interrupt
        mark = dispatcher.progress()
        if batch and not fresh and direct:
            # only re-deliveries of what we handle directly: wait for one to finish
            if await actor.interruptibly(dispatcher.wait_progress(mark)) is STOPPED:
                break
            continue
        if inbox.full(bot_id):
            if await actor.interruptibly(inbox.wait_room(bot_id)) is STOPPED:
                break
            continue
        offset = min(direct) if direct else (newest + 1 if newest >= 0 else None)
        params: dict[str, Any] = {"timeout": actor.poll.poll_timeout_s, "limit": 100}
        if offset is not None:
            params["offset"] = offset
        result = await actor.poll_once(params)
        if result is STOPPED:
            break
        batch = result if isinstance(result, list) else []


def _uid(update: dict[str, Any]) -> int:
    uid = update.get("update_id")
    return uid if isinstance(uid, int) else -1


def _take_directly(dispatcher: ChatDispatcher, updates: list[Any], direct: set[int]) -> None:
    """Today's path for a batch the inbox could not take: handled here, confirmed after."""
    now = time.perf_counter()
    for raw in updates:
        uid = _uid(raw)
        if uid < 0:
            continue
        direct.add(uid)
        if dispatcher.offer(raw, partial(direct.discard, uid), now) == "done":
            direct.discard(uid)
