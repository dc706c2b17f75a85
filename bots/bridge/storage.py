"""aiogram FSM storage on botvisor's context store (memory -> Redis -> PostgreSQL).

Each chat's FSM state is journaled in that chat's history as a record with role `fsm`
whose content is the chat's whole FSM snapshot (every key's state and data); the newest
record is the state. So it is cached in the worker, in Redis for a restarted or moved
worker, and in PostgreSQL's durable history, which rebuilds it after a Redis flush. It
expires with the history (`context.messages_ttl_s`). Keys follow aiogram's key-builder
semantics with every part on: business connection, thread, user, destiny.

aiogram reads the state of every update. So that a chat without FSM state costs no
Redis or PostgreSQL read, each bot has an index: the journal of its pseudo chat 0 (no
Telegram chat has id 0) lists the chats holding FSM state; it is one context per bot,
read once and then served from the worker's cache. A chat enters the index before its
first state is written and leaves it after its last is cleared, so it never misses one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import orjson
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey

from context import Changes, ContextStore, Message

#: the pseudo chat whose journal indexes a bot's chats with FSM state
INDEX_CHAT: Final = 0
#: the role of FSM records in a chat's history
ROLE: Final = "fsm"


def field_of(key: StorageKey, part: str) -> str:
    """One key's state or data within its chat's snapshot, e.g. ":7:42:default:state"."""
    return f"{key.business_connection_id or ''}:{key.thread_id or ''}:{key.user_id}:{key.destiny}:{part}"


class ContextStorage(BaseStorage):
    """Runs in the chat tasks of a worker's bots (one Dispatcher serves many bots). A bot
    runs in one worker at a time, so a per-chat lock here orders its read-modify-writes."""

    def __init__(self, store: ContextStore) -> None:
        self._store = store
        self._locks: dict[tuple[int, int], tuple[asyncio.Lock, int]] = {}

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        await self._put(key, field_of(key, "state"), value)

    async def get_state(self, key: StorageKey) -> str | None:
        value = (await self._chat(key)).get(field_of(key, "state"))
        return value if isinstance(value, str) else None

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        await self._put(key, field_of(key, "data"), dict(data) or None)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        value = (await self._chat(key)).get(field_of(key, "data"))
        return dict(value) if isinstance(value, Mapping) else {}

    async def close(self) -> None:
        """The context store belongs to the worker; nothing of ours to close."""

    async def _snapshot(self, bot_id: int, chat_id: int) -> dict[str, Any]:
        ctx = await self._store.load(bot_id, chat_id)
        for message in reversed(ctx.messages):
            if message.role == ROLE:
                snapshot = orjson.loads(message.content)
                return snapshot if isinstance(snapshot, dict) else {}
        return {}

    async def _write(self, bot_id: int, chat_id: int, snapshot: dict[str, Any]) -> None:
        record = Message(ROLE, orjson.dumps(snapshot).decode())
        await self._store.save(bot_id, chat_id, Changes(append=(record,)))

    async def _indexed(self, key: StorageKey) -> bool:
        index = await self._snapshot(key.bot_id, INDEX_CHAT)
        return str(key.chat_id) in index

    async def _chat(self, key: StorageKey) -> dict[str, Any]:
        if not await self._indexed(key):
            return {}
        return await self._snapshot(key.bot_id, key.chat_id)

    async def _put(self, key: StorageKey, field: str, value: Any) -> None:
        bot, chat = key.bot_id, key.chat_id
        with self._lock(bot, chat) as lock:
            async with lock:
                indexed = await self._indexed(key)
                if value is None and not indexed:
                    return  # nothing stored for this chat: clearing is a no-op
                if not indexed:
                    await self._index(bot, chat, add=True)
                snapshot = await self._snapshot(bot, chat) if indexed else {}
                if value is None:
                    snapshot.pop(field, None)
                else:
                    snapshot[field] = value
                await self._write(bot, chat, snapshot)
                if not snapshot:
                    await self._index(bot, chat, add=False)

    async def _index(self, bot: int, chat: int, *, add: bool) -> None:
        with self._lock(bot, INDEX_CHAT) as lock:
            async with lock:
                index = await self._snapshot(bot, INDEX_CHAT)
                if add:
                    index[str(chat)] = 1
                else:
                    index.pop(str(chat), None)
                await self._write(bot, INDEX_CHAT, index)

    @contextmanager
    def _lock(self, bot: int, chat: int) -> Iterator[asyncio.Lock]:
        """A lock per (bot, chat) that exists only while someone holds or waits for it."""
        k = (bot, chat)
        lock, users = self._locks.get(k) or (asyncio.Lock(), 0)
        self._locks[k] = (lock, users + 1)
        try:
            yield lock
        finally:
            lock, users = self._locks[k]
            if users <= 1:
                del self._locks[k]
            else:
                self._locks[k] = (lock, users - 1)
