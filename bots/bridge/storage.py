"""aiogram FSM storage on botvisor's context store (memory -> Redis -> PostgreSQL).

Each FSM key lives in the dialog namespace of its chat's context, so it is cached in
the worker, written through to Redis (a restarted or moved worker reads it back) and
expires with the dialog TTL (`context.dialog_ttl_s`). The field name follows aiogram's
key-builder semantics with every part on: business connection, thread, user, destiny.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey

from context import Changes, ContextStore


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

    async def _get(self, key: StorageKey, field: str) -> Any:
        ctx = await self._store.load(key.bot_id, key.chat_id)
        return ctx.dialog.get(field)

    async def _put(self, key: StorageKey, field: str, value: Any) -> None:
        if value is None:
            changes = Changes(dialog_clear=(field,))
        else:
            changes = Changes(dialog_set={field: value})
        await self._store.save(key.bot_id, key.chat_id, changes)
