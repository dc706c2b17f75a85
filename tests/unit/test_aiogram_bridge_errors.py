"""The bridge's error paths: a handler that raises, Telegram refusals as aiogram's own
exception types, 429s retried under the limiter, and a Dispatcher as the reference."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bots.handlers import plugins
from bots.telegram.sessions import SessionPool
from emulators.telegram.server import RunningEmulator, open_emulator
from tests.unit.test_aiogram_bridge import _run, _sent_text

MODULE = """
from aiogram import Dispatcher, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command
from aiogram.types import Message

router = Router()

@router.message(Command("boom"))
async def boom(message: Message) -> None:
    raise ValueError("handler bug")

@router.message(Command("edit"))
async def edit(message: Message) -> None:
    try:
        await message.bot.edit_message_text("x", chat_id=message.chat.id, message_id=999)
    except TelegramBadRequest as exc:
        await message.answer(f"caught: {exc.message}")

@router.message(Command("unhandled"))
async def unhandled(message: Message) -> None:
    await message.bot.edit_message_text("x", chat_id=message.chat.id, message_id=999)

@router.message(F.text)
async def echo(message: Message) -> None:
    await message.answer(message.text)

dp = Dispatcher()

@dp.message(F.text)
async def dp_echo(message: Message, bot_username: str) -> None:
    await message.answer(f"dp {bot_username}: {message.text}")
"""


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "errbot.py").write_text(MODULE)
    plugins.use_paths([tmp_path])
    yield "errbot"
    sys.path.remove(str(tmp_path.absolute()))
    sys.modules.pop("errbot", None)
    plugins._loaded.clear()


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(per_chat="100/1") as e:
        yield e


async def test_a_failing_handler_fails_one_update_and_refusals_are_aiogram_errors(
    emu: RunningEmulator, session: SessionPool, plugin: str
) -> None:
    (bot,) = emu.state.create_bots(1)
    handle = await _run(emu, session, bot.token, ref=f"{plugin}:router")
    for text in ("/boom", "/unhandled", "/edit", "still alive"):
        emu.state.inject([{"bot_id": bot.id, "chat_id": 7, "text": text}])
    await _sent_text(emu, bot.id, "caught: Bad Request: message to edit not found")
    await _sent_text(emu, bot.id, "still alive")
    assert handle.actor.stats.handler_errors == 2  # the bug and the unhandled refusal
    assert handle.restarts == 0
    await handle.stop()


async def test_a_429_is_waited_out_and_retried_through_the_limiter(
    session: SessionPool, plugin: str
) -> None:
    # Telegram allows 1 message/s per chat; this bot's limiter is told 100/s, so Telegram
    # answers 429 and BotApi.send under the bridge waits retry_after and sends again
    async with open_emulator(per_chat="1/1") as emu:
        (bot,) = emu.state.create_bots(1)
        handle = await _run(emu, session, bot.token, ref=f"{plugin}:router")
        emu.state.inject([{"bot_id": bot.id, "chat_id": 7, "text": f"m{i}"} for i in range(3)])
        for i in range(3):
            await _sent_text(emu, bot.id, f"m{i}")
        assert handle.actor.api.stats.telegram_429 >= 1
        assert handle.actor.api.limiter.statistics().penalties >= 1
        assert handle.actor.stats.handler_errors == 0
        await handle.stop()


async def test_a_dispatcher_reference_runs_its_own_handlers(
    emu: RunningEmulator, session: SessionPool, plugin: str
) -> None:
    (bot,) = emu.state.create_bots(1)
    handle = await _run(emu, session, bot.token, ref=f"{plugin}:dp")
    emu.state.inject([{"bot_id": bot.id, "chat_id": 7, "text": "hello"}])
    item = await _sent_text(emu, bot.id, "hello")
    assert item["text"] == f"dp {bot.username}: hello"
    await handle.stop()


def test_magic_filters_run_on_the_loop_other_sync_filters_keep_their_thread(plugin: str) -> None:
    from aiogram import Dispatcher, F, Router

    from bots.bridge.handler import inline_magic_filters

    def blocking_filter(message: object) -> bool:
        return True

    router = Router()
    router.message.filter(F.chat.type == "private")
    router.message(F.text, blocking_filter)(lambda message: None)
    dp = Dispatcher()
    dp.include_router(router)
    assert inline_magic_filters(dp) == 2
    filters = router.message.handlers[0].filters or []
    assert [f.awaitable for f in filters] == [True, False]
