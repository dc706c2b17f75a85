"""The `openai` handler in a real BotActor: Bot API emulator as Telegram, the local
OpenAI-compatible server as the model, real Redis and PostgreSQL for the context."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

from bots.actor.actor import BotActor
from bots.actor.policy import BackoffConfig
from bots.actor.progress_store import MemoryProgress
from bots.actor.spec import BotSpec, PollConfig
from bots.actor.supervise import BotHandle, spawn
from bots.handlers.base import BotContext, HandlerDeps
from bots.handlers.llm_settings import DEFAULT_FALLBACK, DEFAULT_GREETING
from bots.handlers.openai_handler import HANDOFF_TEXT, RESET_TEXT
from bots.handlers.registry import make_handler
from bots.llm.breaker import BreakerConfig
from bots.llm.client import LLMClient
from bots.telegram.api import BotApi
from bots.telegram.token import BotToken
from bots.telegram.update import Incoming
from config import Settings
from context import (
    ContextStore,
    handed_off,
    handoff_changes,
    open_context_store,
    release_chat,
)
from emulators.openai import RunningLLMEmulator, open_llm_emulator
from emulators.telegram.server import RunningEmulator, open_emulator
from ratelimit import BotLimiter, Limits, Rate
from tests.context_helpers import delete_prefix, ensure_migrated


class Counted:
    """The real handler, plus an event per finished update (tests wait on it, not sleeps)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.done = 0
        self.changed = asyncio.Event()

    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        try:
            await self.inner.handle(update, ctx)
        finally:
            self.done += 1
            self.changed.set()
            self.changed = asyncio.Event()

    async def wait_done(self, n: int) -> None:
        while self.done < n:
            await self.changed.wait()


class Rig:
    def __init__(
        self,
        emu: RunningEmulator,
        llm_emu: RunningLLMEmulator,
        session: aiohttp.ClientSession,
        settings: Settings,
    ) -> None:
        self.emu = emu
        self.llm_emu = llm_emu
        self.session = session
        self.settings = settings
        self.now = [0.0]
        self.llm = LLMClient(
            base_url=llm_emu.base_url,
            api_key="sk-test",
            default_model="emu-1",
            attempt_timeout_s=2.0,
            max_retries=0,
            breaker=BreakerConfig(failure_threshold=2, cooldown_s=30),
            clock=lambda: self.now[0],
        )
        self.stack = AsyncExitStack()
        self.store: ContextStore | None = None
        self.handle: BotHandle | None = None
        self.counted: Counted | None = None
        self.offsets = MemoryProgress()
        (self.bot,) = emu.state.create_bots(1)
        self.chat = secrets.randbelow(2**40) + 1  # chats of this test alone in the database

    async def open_store(self) -> ContextStore:
        self.store = await self.stack.enter_async_context(open_context_store(self.settings))
        return self.store

    async def start_bot(self, bot_settings: Mapping[str, Any] | None = None) -> None:
        assert self.store is not None
        token = BotToken(self.bot.token)
        generous = Limits(Rate(1000, 1), Rate(1000, 1), Rate(1000, 1))
        api = BotApi(
            self.session,
            self.emu.base_url,
            token,
            BotLimiter(generous),
            request_timeout=5,
            max_retries=2,
        )
        self.counted = Counted(make_handler("openai", HandlerDeps(self.store, self.llm)))
        spec = BotSpec(token.bot_id, token, "openai", dict(bot_settings or {}), 1)
        actor = BotActor(spec, api, self.counted, PollConfig(1, 100, 5), self.offsets)
        self.handle = BotHandle(actor)

        async def on_disabled(bot_id: int, reason: str) -> None:
            raise AssertionError(reason)

        await spawn(self.handle, BackoffConfig(0.1, 1), on_disabled)

    async def stop_bot(self) -> None:
        assert self.handle is not None
        await self.handle.stop()

    async def say(self, text: str, chat: int | None = None) -> list[str]:
        """Inject one user message; return what the bot sent to that chat in answer."""
        assert self.counted is not None
        chat = self.chat if chat is None else chat
        before = len(self.emu.state.sent_log(self.bot.id) or [])
        goal = self.counted.done + 1
        self.emu.state.inject([{"bot_id": self.bot.id, "chat_id": chat, "text": text}])
        async with asyncio.timeout(15):
            await self.counted.wait_done(goal)
        sent = (self.emu.state.sent_log(self.bot.id) or [])[before:]
        return [m["text"] for m in sent if m["chat_id"] == chat]


@pytest.fixture
async def rig(settings_factory: Callable[..., Settings], database_url: str) -> AsyncIterator[Rig]:
    await ensure_migrated(database_url)
    settings = settings_factory()
    async with (
        open_emulator(rate_limits=False) as emu,
        open_llm_emulator() as llm_emu,
        aiohttp.ClientSession() as session,
    ):
        r = Rig(emu, llm_emu, session, settings)
        try:
            await r.open_store()
            yield r
        finally:
            if r.handle is not None:
                await r.handle.stop()
            await r.stack.aclose()
            await r.llm.aclose()


async def test_the_second_answer_depends_on_the_first(rig: Rig) -> None:
    await rig.start_bot({"system_prompt": "You are terse."})
    assert await rig.say("/start") == [DEFAULT_GREETING]
    assert await rig.say("my name is Ann") == ["you said my name is Ann"]
    assert await rig.say("what is my name?") == [
        "you said what is my name?; earlier you said my name is Ann"
    ]
    prompt = rig.llm_emu.state.requests[-1].messages
    assert prompt[0] == {"role": "system", "content": "You are terse."}
    assert [m["role"] for m in prompt[1:]] == ["user", "assistant", "user"]
    assert rig.llm.statistics().tokens_by_bot[rig.bot.id] > 0


async def test_context_survives_an_actor_restart_and_a_redis_flush(
    rig: Rig, redis_url: str
) -> None:
    await rig.start_bot()
    await rig.say("my name is Ann")
    await rig.stop_bot()
    await rig.stack.aclose()  # the worker's store goes away (queued history is written)
    assert await delete_prefix(redis_url, rig.settings.redis.prefix) > 0
    await rig.open_store()  # a new worker: empty memory, empty Redis
    await rig.start_bot()
    assert await rig.say("what is my name?") == [
        "you said what is my name?; earlier you said my name is Ann"
    ]
    assert rig.store is not None and rig.store.statistics().postgres_hits == 1


async def test_failing_upstream_gets_fallbacks_opens_the_breaker_and_closes_on_recovery(
    rig: Rig,
) -> None:
    await rig.start_bot()
    rig.llm_emu.state.fail_next("500", count=-1)
    assert await rig.say("one") == [DEFAULT_FALLBACK]
    assert await rig.say("two") == [DEFAULT_FALLBACK]
    assert rig.llm.breaker_state == "open"
    assert await rig.say("three") == [DEFAULT_FALLBACK]
    assert rig.llm_emu.state.count() == 2  # the open breaker spared the upstream
    rig.llm_emu.state.recover()
    rig.now[0] += 31  # past the cooldown: the next call is the probe
    answer = await rig.say("four")
    assert answer == ["you said four; earlier you said three"]
    assert rig.llm.breaker_state == "closed"
    stats = rig.llm.statistics()
    assert (stats.failed, stats.refused, stats.succeeded) == (2, 1, 1)


async def test_reset_forgets_the_chat(rig: Rig) -> None:
    await rig.start_bot()
    await rig.say("my name is Ann")
    assert await rig.say("/reset") == [RESET_TEXT]
    assert await rig.say("hello") == ["you said hello"]


async def test_handoff_stops_answers_until_the_chat_is_released(rig: Rig) -> None:
    await rig.start_bot({"handoff_keyword": "human please"})
    other = rig.chat + 1
    assert await rig.say("hi") == ["you said hi"]
    assert await rig.say("/operator") == [HANDOFF_TEXT]
    assert await rig.say("are you there?") == []
    assert await rig.say("I want a HUMAN PLEASE", chat=other) == [HANDOFF_TEXT]
    assert await rig.say("hello?", chat=other) == []
    # released from another process (the CLI / admin API), with a store of its own
    async with open_context_store(rig.settings) as admin:
        assert await release_chat(admin, rig.bot.id, rig.chat) is True
    assert await rig.say("back?") == ["you said back?; earlier you said are you there?"]
    assert await rig.say("still?", chat=other) == []  # only the released chat


async def test_commands_during_a_handoff_are_commands_not_text_for_the_model(
    rig: Rig,
) -> None:
    await rig.start_bot()
    assert await rig.say("hi") == ["you said hi"]
    assert await rig.say("/operator") == [HANDOFF_TEXT]
    assert await rig.say("are you there?") == []
    assert await rig.say("/start") == [HANDOFF_TEXT]  # a human is coming, not the greeting
    assert await rig.say("/operator") == [HANDOFF_TEXT]
    assert await rig.say("/whatever") == []
    assert await rig.say("/reset") == [RESET_TEXT]  # forgets the messages...
    assert await rig.say("hello?") == []  # ...and the human keeps the chat
    async with open_context_store(rig.settings) as admin:
        assert await release_chat(admin, rig.bot.id, rig.chat) is True
    assert await rig.say("back?") == ["you said back?; earlier you said hello?"]
    said = [m["content"] for r in rig.llm_emu.state.requests for m in r.messages]
    assert not [t for t in said if t.startswith("/")]  # no command ever reached the model


async def test_a_handoff_by_another_process_is_kept_though_this_worker_cached_the_chat(
    rig: Rig,
) -> None:
    """The model is asked while the turn is written: the write finds the handoff another
    process made (this worker's cache did not know it), and the answer is not sent."""
    await rig.start_bot()
    assert await rig.say("hi") == ["you said hi"]  # the chat is in this worker's cache
    async with open_context_store(rig.settings) as admin:
        await admin.save(rig.bot.id, rig.chat, handoff_changes("admin", None))
    assert await rig.say("anyone?") == []
    assert rig.store is not None
    ctx = await rig.store.load(rig.bot.id, rig.chat)
    assert handed_off(ctx)
    assert [m.content for m in ctx.messages][-1] == "anyone?"  # recorded, for the human


async def test_a_handoff_survives_a_redis_wipe_with_a_cold_cache(rig: Rig, redis_url: str) -> None:
    await rig.start_bot()
    assert await rig.say("hi") == ["you said hi"]
    assert await rig.say("/operator") == [HANDOFF_TEXT]
    await rig.stop_bot()
    await rig.stack.aclose()  # the worker's store goes away (queued state is written)
    assert await delete_prefix(redis_url, rig.settings.redis.prefix) > 0
    await rig.open_store()  # a new worker: empty memory, empty Redis
    await rig.start_bot()
    assert await rig.say("are you there?") == []  # the human still has the chat
    assert len(rig.llm_emu.state.requests) == 1


async def test_a_history_longer_than_the_window_still_gets_answers(rig: Rig) -> None:
    rig.llm_emu.state.context_window = 600  # tokens, as the emulator counts them
    await rig.start_bot({"context_window_tokens": 600})
    words = " ".join(["word"] * 60)
    for n in range(8):
        (answer,) = await rig.say(f"{words} n{n}")
        assert answer.startswith(f"you said {words} n{n}")
        if n:
            assert answer.endswith(f"earlier you said {words} n{n - 1}")  # history kept
    assert rig.llm_emu.state.count(400) == 0  # every prompt fitted: nothing rejected
    assert len(rig.llm_emu.state.requests[-1].messages) < 8  # the oldest turns dropped


async def test_a_prompt_the_model_rejects_is_retried_with_the_newest_turn_alone(
    rig: Rig,
) -> None:
    rig.llm_emu.state.context_window = 150  # smaller than the window the client assumes
    await rig.start_bot()
    words = " ".join(["word"] * 60)
    for n in range(4):
        (answer,) = await rig.say(f"{words} n{n}")
        assert answer.startswith(f"you said {words} n{n}")
    assert rig.llm_emu.state.count(400) >= 1  # rejected, retried short, answered


async def test_in_a_group_each_user_turn_carries_the_speakers_name(rig: Rig) -> None:
    await rig.start_bot()
    group = -(rig.chat + 10)
    assert await rig.say("hello", chat=group) == ["you said User: hello"]
    assert await rig.say("hi", chat=rig.chat) == ["you said hi"]  # a private chat: as typed
    (prompt,) = [
        r.messages
        for r in rig.llm_emu.state.requests
        if r.messages[-1]["content"].endswith("hello")
    ]
    assert prompt[-1] == {"role": "user", "content": "User: hello"}


async def test_long_replies_are_split_under_telegrams_limit(rig: Rig) -> None:
    await rig.start_bot()
    pieces = await rig.say("/long 9000")
    assert len(pieces) == 3
    assert all(len(p) <= 4096 for p in pieces)
    assert sum(len(p) for p in pieces) >= 9000 - 10  # only whitespace at the cuts dropped
