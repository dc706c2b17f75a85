"""aiogram FSM storage on botvisor's context store (memory -> Redis -> PostgreSQL).

Each FSM key lives in the dialog namespace of its chat's context, so it is cached in
the worker, written through to Redis (a restarted or moved worker reads it back) and
expires with the dialog TTL (`context.dialog_ttl_s`). The field name follows aiogram's
key-builder semantics with every part on: business connection, thread, user, destiny.

aiogram reads the state of every update. So that a chat without FSM state costs no
Redis or PostgreSQL read, each bot has an index: the dialog of its pseudo chat 0 (no
Telegram chat has id 0) names the chats that hold FSM fields. It is one context per
bot, read once and then served from the worker's cache. The index entry is written
before a chat's first field and removed after its last, so it never misses state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey

from context import Changes, ContextStore

#: the pseudo chat whose dialog indexes a bot's chats with FSM state
INDEX_CHAT = 0
_PREFIX = "fsm:"


def field_of(key: StorageKey, part: str) -> str:
    """The dialog field of one key's state or data, e.g. "fsm::7:42:default:state"."""
    business = key.business_connection_id or ""
    thread = key.thread_id or ""
    return f"fsm:{business}:{thread}:{key.user_id}:{key.destiny}:{part}"


class ContextStorage(BaseStorage):
    """Runs in the chat's task (a Dispatcher shared by many bots of one worker)."""

    def __init__(self, store: ContextStore) -> None:
        self._store = store

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        await self._put(key, field_of(key, "state"), value)

    async def get_state(self, key: StorageKey) -> str | None:
        value = await self._get(key, field_of(key, "state"))
        return value if isinstance(value, str) else None

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        await self._put(key, field_of(key, "data"), dict(data) or None)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        value = await self._get(key, field_of(key, "data"))
        return dict(value) if isinstance(value, Mapping) else {}

    async def close(self) -> None:
        """The context store belongs to the worker; nothing of ours to close."""

    async def _indexed(self, key: StorageKey) -> bool:
        index = await self._store.load(key.bot_id, INDEX_CHAT)
        return str(key.chat_id) in index.dialog

    async def _get(self, key: StorageKey, field: str) -> Any:
        if not await self._indexed(key):
            return None
        ctx = await self._store.load(key.bot_id, key.chat_id)
        return ctx.dialog.get(field)

    async def _put(self, key: StorageKey, field: str, value: Any) -> None:
        bot, chat = key.bot_id, key.chat_id
        indexed = await self._indexed(key)
        if value is None:
            if not indexed:
                return  # nothing stored for this chat: clearing is a no-op
            ctx = await self._store.save(bot, chat, Changes(dialog_clear=(field,)))
            if not any(name.startswith(_PREFIX) for name in ctx.dialog):
                await self._store.save(bot, INDEX_CHAT, Changes(dialog_clear=(str(chat),)))
            return
        if not indexed:
            await self._store.save(bot, INDEX_CHAT, Changes(dialog_set={str(chat): 1}))
        await self._store.save(bot, chat, Changes(dialog_set={field: value}))
