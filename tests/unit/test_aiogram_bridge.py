"""The aiogram bridge in one process: a real Router (examples.support_bot) run by a real
BotActor against the emulator: commands, inline keyboards, callback queries, an FSM
form, the error handler, per-bot settings as workflow data, every call through the
bot's limited API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from bots.actor.actor import BotActor
from bots.actor.policy import BackoffConfig
from bots.actor.progress_store import MemoryProgress
from bots.actor.spec import BotSpec, PollConfig
from bots.actor.supervise import BotHandle, spawn
from bots.handlers.base import BotContext, HandlerDeps
from bots.handlers.registry import make_handler
from bots.telegram.sessions import SessionPool
from bots.telegram.token import BotToken
from config.sections.messaging import RateLimitSection
from emulators.telegram.server import RunningEmulator, open_emulator
from ratelimit import BotLimiter, Limits
from tests.botapi import worker_api

REF = "examples.support_bot:router"


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(per_chat="100/1") as e:
        yield e


async def _never_disabled(bot_id: int, reason: str) -> None:
    raise AssertionError(f"bot {bot_id} disabled: {reason}")


async def _run(
    emu: RunningEmulator,
    session: SessionPool,
    token: str,
    settings: Mapping[str, Any] | None = None,
    ref: str = REF,
) -> BotHandle:
    t = BotToken(token)
    # a quick conversation: the form sends faster than Telegram's 1 message/s per chat
    fast = RateLimitSection.model_validate({"per_chat": {"limit": 100, "period_s": 1}})
    api = worker_api(
        session, emu.base_url, t, retries=2, limiter=BotLimiter(Limits.from_settings(fast))
    )
    spec = BotSpec(t.bot_id, t, ref, settings or {}, 1)
    handler = make_handler(ref, HandlerDeps())
    handle = BotHandle(BotActor(spec, api, handler, PollConfig(1, 100, 5.0), MemoryProgress()))
    await spawn(handle, BackoffConfig(0.1, 1), _never_disabled)
    return handle


async def _sent_text(emu: RunningEmulator, bot_id: int, needle: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for item in emu.state.sent_log(bot_id) or ():
            if needle in item["text"]:
                return item
        return None

    async with asyncio.timeout(15):
        await emu.state.wait_until(lambda: found() is not None)
    item = found()
    assert item is not None
    return item


async def _call(emu: RunningEmulator, bot_id: int, method: str, n: int = 1) -> dict[str, Any]:
    def matching() -> list[dict[str, Any]]:
        calls = emu.server.interactions.calls(bot_id) or []
        return [c for c in calls if c["method"] == method]

    async with asyncio.timeout(15):
        await emu.state.wait_until(lambda: len(matching()) >= n)
    return matching()[n - 1]


async def test_commands_keyboard_callbacks_form_and_error_handler(
    emu: RunningEmulator, session: SessionPool
) -> None:
    (bot,) = emu.state.create_bots(1)
    handle = await _run(emu, session, bot.token, {"greeting": "Howdy!", "team": "Team X"})
    say = lambda text: emu.state.inject([{"bot_id": bot.id, "chat_id": 42, "text": text}])  # noqa: E731

    say("/start")
    menu = await _call(emu, bot.id, "sendMessage")
    assert menu["text"] == "Howdy!"  # the bot's own settings, as workflow data
    buttons = [b["callback_data"] for row in menu["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == ["menu:help", "menu:about", "menu:form"]

    async with emu.control() as ctl:
        query = await ctl.press(bot.id, 42, menu["message_id"], "menu:help")
        edit = await _call(emu, bot.id, "editMessageText")
        assert edit["message_id"] == menu["message_id"] and "/form" in edit["text"]
        answer = await _call(emu, bot.id, "answerCallbackQuery")
        assert answer["callback_query_id"] == query

        await ctl.press(bot.id, 42, menu["message_id"], "menu:about")
        about = await _call(emu, bot.id, "answerCallbackQuery", 2)
        assert about["show_alert"] is True and bot.username in about["text"]

        await ctl.press(bot.id, 42, menu["message_id"], "menu:form")
        await _call(emu, bot.id, "answerCallbackQuery", 3)
    await _sent_text(emu, bot.id, "What is your name?")
    say("Ann")
    await _sent_text(emu, bot.id, "e-mail address?")
    say("no address")
    await _sent_text(emu, bot.id, "does not look like an e-mail")
    say("ann@example.org")
    await _sent_text(emu, bot.id, "What is the problem?")
    say("the printer is on fire")
    done = await _sent_text(emu, bot.id, "Thanks, Ann!")
    assert done["text"] == (
        "Thanks, Ann! Team X will write to ann@example.org about: the printer is on fire"
    )

    say("/crash")  # the Router's error handler answers; the actor counts no handler error
    await _sent_text(emu, bot.id, "something went wrong")
    assert handle.actor.stats.handler_errors == 0
    # every call went through the limited path (BotApi.send counts them)
    await handle.stop()
    sent = len(emu.state.sent_log(bot.id) or ())
    calls = emu.server.interactions.calls(bot.id) or []
    others = len([c for c in calls if c["method"] != "sendMessage"])
    assert handle.actor.api.stats.sent == sent + others


async def test_handlers_get_no_limiter_free_call(
    emu: RunningEmulator, session: SessionPool
) -> None:
    (bot,) = emu.state.create_bots(1)
    t = BotToken(bot.token)
    api = worker_api(session, emu.base_url, t, retries=0)
    ctx = BotContext(bot.id, bot.username, api, {})
    assert not hasattr(ctx.api, "call")
    assert not hasattr(ctx.api, "_call")
    await ctx.api.once("sendChatAction", {"chat_id": 5, "action": "typing"}, None, timeout=5)
    await ctx.api.send_message(5, "hi")
    assert api.limiter.statistics().acquires == 2
