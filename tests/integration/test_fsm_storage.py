"""aiogram FSM state on the context store: kept per bot, chat, user, thread, business
connection and destiny, and read back by another store (a restarted worker)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable

import pytest
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import StorageKey

from bots.bridge.storage import ContextStorage
from config import Settings
from context import ContextStore, open_context_store
from tests.context_helpers import delete_prefix, ensure_migrated


class Form(StatesGroup):
    name = State()


@pytest.fixture
async def settings(settings_factory: Callable[..., Settings], database_url: str) -> Settings:
    await ensure_migrated(database_url)
    return settings_factory()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[ContextStore]:
    async with open_context_store(settings) as s:
        yield s


async def test_state_and_data_per_key_survive_a_new_store(
    settings: Settings, store: ContextStore
) -> None:
    bot = secrets.randbelow(2**40) + 1
    fsm = ContextStorage(store)
    key = StorageKey(bot_id=bot, chat_id=-100, user_id=7)
    others = [
        StorageKey(bot_id=bot, chat_id=-100, user_id=8),
        StorageKey(bot_id=bot, chat_id=-100, user_id=7, thread_id=3),
        StorageKey(bot_id=bot, chat_id=-100, user_id=7, destiny="other"),
        StorageKey(bot_id=bot, chat_id=-100, user_id=7, business_connection_id="b1"),
        StorageKey(bot_id=bot + 1, chat_id=-100, user_id=7),
    ]
    await fsm.set_state(key, Form.name)
    await fsm.set_data(key, {"name": "Ann"})
    assert await fsm.update_data(key, {"email": "a@b.c"}) == {"name": "Ann", "email": "a@b.c"}
    for other in others:
        assert await fsm.get_state(other) is None
        assert await fsm.get_data(other) == {}
    async with open_context_store(settings) as restarted:
        again = ContextStorage(restarted)
        assert await again.get_state(key) == "Form:name"
        assert await again.get_data(key) == {"name": "Ann", "email": "a@b.c"}
        await again.set_state(key, None)
        await again.set_data(key, {})
    async with open_context_store(settings) as third:
        assert await ContextStorage(third).get_state(key) is None
        assert await ContextStorage(third).get_data(key) == {}


async def test_a_chat_without_state_is_answered_from_the_bots_index(
    settings: Settings, store: ContextStore
) -> None:
    bot = secrets.randbelow(2**40) + 1
    fsm = ContextStorage(store)
    await fsm.set_state(StorageKey(bot_id=bot, chat_id=5, user_id=5), "Form:name")
    before = store.statistics()
    for chat in range(100, 200):
        assert await fsm.get_state(StorageKey(bot_id=bot, chat_id=chat, user_id=chat)) is None
        await fsm.set_state(StorageKey(bot_id=bot, chat_id=chat, user_id=chat), None)
    after = store.statistics()
    assert after.memory_misses == before.memory_misses  # no Redis/PostgreSQL read per chat
    assert after.saves == before.saves  # clearing what is not there writes nothing
    # the last field of a chat gone: the chat leaves the index
    key = StorageKey(bot_id=bot, chat_id=5, user_id=5)
    await fsm.set_data(key, {"a": 1})
    await fsm.set_state(key, None)
    assert await fsm.get_data(key) == {"a": 1}
    await fsm.set_data(key, {})
    assert await fsm.get_state(key) is None
    assert "5" not in await fsm._snapshot(bot, 0)


async def test_state_survives_a_redis_flush_from_the_durable_history(
    settings: Settings, store: ContextStore, redis_url: str
) -> None:
    bot = secrets.randbelow(2**40) + 1
    fsm = ContextStorage(store)
    key = StorageKey(bot_id=bot, chat_id=42, user_id=42)
    await fsm.set_state(key, Form.name)
    await fsm.set_data(key, {"name": "Ann"})
    assert await store.wait_durable(10)
    assert await delete_prefix(redis_url, settings.redis.prefix) > 0  # FLUSHALL of ours
    async with open_context_store(settings) as restarted:
        again = ContextStorage(restarted)
        assert await again.get_state(key) == "Form:name"
        assert await again.get_data(key) == {"name": "Ann"}
