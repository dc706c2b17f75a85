"""Quotas per owner: the worker's meter in a real BotActor (Bot API emulator as Telegram,
the local OpenAI-compatible server as the model), counters in real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots.actor.actor import BotActor
from bots.actor.policy import BackoffConfig
from bots.actor.progress_store import MemoryProgress
from bots.actor.spec import BotSpec, PollConfig
from bots.actor.supervise import BotHandle, spawn
from bots.handlers.base import BotContext, HandlerDeps
from bots.handlers.metering import MeteredHandler
from bots.handlers.registry import make_handler
from bots.llm.client import LLMClient
from bots.telegram.api import BotApi
from bots.telegram.token import BotToken
from bots.telegram.update import Incoming
from config import Settings
from context import open_context_store
from emulators.openai import RunningLLMEmulator, open_llm_emulator
from emulators.telegram.server import RunningEmulator, open_emulator
from ipc.usage import Usage, UsageCounters, utc_day
from ratelimit import BotLimiter, Limits, Rate
from supervisor.registry.bots import Registry
from supervisor.registry.owners import create_owner
from supervisor.registry.quotas import QuotaOverride, QuotaStore, sync_usage, usage_of
from supervisor.services import open_registry
from supervisor.worker.usage_meter import UsageMeter

FALLBACK = "Daily allowance used up (test)."


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


@dataclass
class Rig:
    emu: RunningEmulator
    llm_emu: RunningLLMEmulator
    settings: Settings
    registry: Registry
    redis: aioredis.Redis
    session: aiohttp.ClientSession
    owner_id: int

    def counters(self) -> UsageCounters:
        return UsageCounters(self.redis, self.settings.redis.prefix, 5.0)

    def store(self) -> QuotaStore:
        return QuotaStore(self.registry.pool, 5.0)


@pytest.fixture
async def rig(settings_factory: Callable[..., Settings]) -> AsyncIterator[Rig]:
    # the run's shared database: every test has an owner of its own
    settings = settings_factory(quotas={"fallback_text": FALLBACK})
    assert settings.redis.url is not None
    redis = aioredis.from_url(settings.redis.url, socket_timeout=5)
    async with (
        open_emulator(rate_limits=False) as emu,
        open_llm_emulator() as llm_emu,
        aiohttp.ClientSession() as session,
        open_registry(settings) as registry,
    ):
        owner, _ = await create_owner(registry, f"owner-{secrets.token_hex(3)}")
        try:
            yield Rig(emu, llm_emu, settings, registry, redis, session, owner.id)
        finally:
            await redis.aclose()


async def _run_bot(rig: Rig, meter: UsageMeter, texts: list[str]) -> list[str]:
    """One openai bot of the rig's owner, metered like a worker meters it; each text sent
    and handled in turn; what the bot answered, in order."""
    (bot,) = rig.emu.state.create_bots(1)
    token = BotToken(bot.token)
    await rig.registry.add(token, handler="openai", owner_id=rig.owner_id)
    llm = LLMClient(
        base_url=rig.llm_emu.base_url,
        api_key="sk-test",
        default_model="emu-1",
        attempt_timeout_s=5,
        max_retries=0,
    )
    generous = Limits(Rate(1000, 1), Rate(1000, 1), Rate(1000, 1))
    api = BotApi(
        rig.session, rig.emu.base_url, token, BotLimiter(generous), request_timeout=5, max_retries=2
    )
    async with open_context_store(rig.settings) as store:
        inner = make_handler("openai", HandlerDeps(store, llm, usage=meter))
        counted = Counted(MeteredHandler(inner, meter))
        spec = BotSpec(token.bot_id, token, "openai", {}, 1)
        handle = BotHandle(BotActor(spec, api, counted, PollConfig(1, 100, 5), MemoryProgress()))

        async def on_disabled(bot_id: int, reason: str) -> None:
            raise AssertionError(reason)

        await spawn(handle, BackoffConfig(0.1, 1), on_disabled)
        try:
            for n, text in enumerate(texts, 1):
                rig.emu.state.inject([{"bot_id": bot.id, "chat_id": 4242, "text": text}])
                async with asyncio.timeout(15):
                    while counted.done < n:
                        await counted.changed.wait()
                await meter.flush()  # what the worker's flusher does every second
        finally:
            await handle.stop()
            await llm.aclose()
            await rig.registry.remove(token.bot_id)  # the emulator's ids repeat per run
    return [m["text"] for m in rig.emu.state.sent_log(bot.id) or []]


async def test_over_the_token_quota_an_openai_bot_answers_the_fallback_without_the_model(
    rig: Rig,
) -> None:
    await rig.store().set_override(rig.owner_id, QuotaOverride(llm_tokens_per_day=1))
    meter = UsageMeter(rig.redis, rig.registry.pool, lambda: rig.settings)

    answers = await _run_bot(rig, meter, ["hello", "hello again"])

    assert answers[0].startswith("you said hello")  # under the quota: the model answered
    assert answers[1] == FALLBACK
    assert rig.llm_emu.state.count() == 1  # the second message never reached the model
    used = (await rig.counters().read([rig.owner_id], utc_day()))[rig.owner_id]
    assert used.messages == 2 and used.llm_tokens > 1


async def test_over_the_messages_quota_updates_are_confirmed_but_not_answered(rig: Rig) -> None:
    await rig.store().set_override(rig.owner_id, QuotaOverride(messages_per_day=1))
    meter = UsageMeter(rig.redis, rig.registry.pool, lambda: rig.settings)

    answers = await _run_bot(rig, meter, ["one", "two"])

    assert len(answers) == 1 and answers[0].startswith("you said one")
    used = (await rig.counters().read([rig.owner_id], utc_day()))[rig.owner_id]
    assert used.messages == 1


async def test_usage_counts_survive_redis_losing_them(rig: Rig) -> None:
    day, counters, store = utc_day(), rig.counters(), rig.store()
    await counters.add({(rig.owner_id, day): {"messages": 7, "llm_tokens": 300}})  # type: ignore[dict-item]
    assert (await sync_usage(store, counters, day))[rig.owner_id] == Usage(7, 300)

    await rig.redis.delete(f"{rig.settings.redis.prefix}usage:{rig.owner_id}:{day}")  # a restart
    await counters.add({(rig.owner_id, day): {"messages": 1}})  # type: ignore[dict-item]
    assert (await counters.read([rig.owner_id], day))[rig.owner_id] == Usage(1, 0)

    # the master's next sync puts back what PostgreSQL remembered, once
    assert (await sync_usage(store, counters, day))[rig.owner_id] == Usage(8, 300)
    assert (await sync_usage(store, counters, day))[rig.owner_id] == Usage(8, 300)
    assert (await usage_of(store, None, [rig.owner_id], day))[rig.owner_id] == Usage(8, 300)


async def test_a_burst_to_bots_not_seen_yet_looks_their_owners_up_in_one_query(rig: Rig) -> None:
    """5,000 bots' first messages used to make 5,000 owner queries through a pool of 4."""
    await rig.store().set_override(rig.owner_id, QuotaOverride(messages_per_day=150))
    bots = rig.emu.state.create_bots(200)
    for bot in bots:
        await rig.registry.add(BotToken(bot.token), owner_id=rig.owner_id)
    meter = UsageMeter(rig.redis, rig.registry.pool, lambda: rig.settings)
    try:
        ids = [b.id for b in bots]
        cancelled = asyncio.create_task(meter.admit_message(ids[0]))
        burst = asyncio.gather(*(meter.admit_message(b) for b in ids))
        await asyncio.sleep(0)  # the first lookup is queued: its waiter goes away
        cancelled.cancel()
        admitted = await burst
        # the owner is known for every bot: exactly the quota is admitted, in one query each
        assert admitted.count(True) == 150 and admitted[:150] == [True] * 150
        assert (meter.owner_queries, meter.quota_queries) == (1, 1)
        assert await meter.admit_message(7_777_777_777)  # no such bot: no owner, no quota
        assert meter.owner_queries == 2
    finally:
        await meter.aclose()
        for bot in bots:
            await rig.registry.remove(bot.id)
