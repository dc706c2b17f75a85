"""Bounded memory per worker: the context cache's worker-wide byte cap (LRU across bots),
the rate limiter's chat keys, the dispatcher queues (a cap that pauses polls)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bots.actor.dispatch import ChatDispatcher
from bots.actor.queue_budget import QueueBudget
from bots.actor.stats import ActorStats
from bots.telegram.api import BotApi
from bots.telegram.token import BotToken
from bots.telegram.update import Incoming
from config import Settings, load_settings
from context.lru import CacheBudget, ChatCache
from context.model import Context, Message
from ratelimit import BotLimiter, Limits, Rate
from supervisor.worker.bounds import GatedBotApi, WorkerBounds


def ctx(bot: int, chat: int, size: int = 1000) -> Context:
    return Context(bot, chat, "v", messages=(Message("user", "x" * size),))


def caches(n: int, budget: CacheBudget) -> list[ChatCache]:
    return [ChatCache(1000, 1_000_000, 3600, budget=budget) for _ in range(n)]


def test_worker_cap_evicts_the_least_recently_used_chat_of_any_bot() -> None:
    one = ctx(1, 1).approx_bytes()
    budget = CacheBudget(one * 3)
    a, b = caches(2, budget)
    a.put(ctx(1, 1))
    b.put(ctx(2, 1))
    a.put(ctx(1, 2))
    assert budget.bytes == one * 3 and len(budget) == 3
    assert a.get(1) is not None  # bot 1's chat 1 is now the most recent
    b.put(ctx(2, 2))  # over the cap: bot 2's chat 1 is the LRU across bots
    assert b.get(1) is None and a.get(1) is not None and a.get(2) is not None
    assert budget.bytes == one * 3 and budget.evictions == 1
    assert a.statistics().bytes + b.statistics().bytes == budget.bytes
    assert b.statistics().evictions == 1


def test_worker_total_stays_under_the_cap_with_many_bots() -> None:
    budget = CacheBudget(200_000)
    bots = caches(500, budget)
    for round_ in range(3):
        for i, cache in enumerate(bots):
            cache.put(ctx(i, round_, 500))
    held = sum(c.statistics().bytes for c in bots)
    assert held == budget.bytes <= 200_000
    assert sum(len(c) for c in bots) == len(budget)
    assert budget.evictions > 0


def test_uncharged_when_a_bot_leaves_or_a_chat_expires_or_is_discarded() -> None:
    now = [0.0]
    budget = CacheBudget(1_000_000)
    a = ChatCache(1000, 1_000_000, 60, clock=lambda: now[0], budget=budget)
    b = ChatCache(1000, 1_000_000, 60, clock=lambda: now[0], budget=budget)
    for chat in range(3):
        a.put(ctx(1, chat))
        b.put(ctx(2, chat))
    a.discard(0)
    assert len(budget) == 5
    a.clear()  # the bot left the worker
    assert len(budget) == 3 and budget.bytes == b.statistics().bytes
    now[0] = 61
    assert b.get(1) is None  # expired
    assert len(budget) == 2
    b.put(ctx(2, 1))  # replacing an entry charges it once
    b.put(ctx(2, 1))
    assert len(budget) == 3 and budget.bytes == b.statistics().bytes


def test_a_context_larger_than_the_worker_cap_is_not_cached() -> None:
    budget = CacheBudget(5000)
    (a,) = caches(1, budget)
    a.put(ctx(1, 1, 100))
    a.put(ctx(1, 2, 10_000))
    assert a.get(2) is None and a.get(1) is not None and budget.evictions == 0


def test_zero_budget_disables_caching() -> None:
    budget = CacheBudget(0)
    (a,) = caches(1, budget)
    a.put(ctx(1, 1, 10))
    assert a.get(1) is None and budget.bytes == 0


# -- rate limiter: idle chat keys evicted past the worker's cap ------------------------------


def limiter_at(now: list[float]) -> BotLimiter:
    limits = Limits(Rate(30, 1.0), Rate(1, 1.0), Rate(20, 60.0), margin_s=0.0)

    async def no_sleep(_: float) -> None:
        raise AssertionError("these sends never wait")

    return BotLimiter(limits, clock=lambda: now[0], sleep=no_sleep)


async def test_evict_idle_keeps_keys_that_still_limit_a_send() -> None:
    now = [0.0]
    lim = limiter_at(now)
    for chat in (1, 2, 3, -1):
        await lim.acquire(chat)
    assert lim.statistics().chat_keys == 4
    now[0] = 0.5
    assert lim.evict_idle() == 0  # every window still counts a send
    now[0] = 2.0
    assert lim.evict_idle() == 3  # the private chats' 1 s windows are over
    assert lim.statistics().chat_keys == 1  # the group's 60 s window is not


async def test_worker_bounds_evict_idle_keys_of_every_bot_only_past_the_cap(
    settings: Settings,
) -> None:
    now = [0.0]
    bounds = WorkerBounds(settings)
    bounds.chat_keys_max = 5
    limiters = [limiter_at(now) for _ in range(3)]
    for lim in limiters[:2]:
        await lim.acquire(1)
        await lim.acquire(2)
    now[0] = 2.0
    bounds.enforce(limiters)
    assert bounds.chat_keys == 4 and bounds.chat_keys_evicted == 0  # under the cap: kept
    await limiters[2].acquire(1)
    await limiters[2].acquire(2)
    bounds.enforce(limiters)  # 6 > 5: the idle keys of every bot go
    assert bounds.chat_keys == 2 and bounds.chat_keys_evicted == 4
    assert [lim.statistics().chat_keys for lim in limiters] == [0, 0, 2]


# -- dispatcher queues: a worker-wide cap that pauses polls, never drops ---------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "empty.toml"
    config.write_text("")
    return load_settings(config, environ={})


@pytest.fixture
def budget() -> Iterator[QueueBudget]:
    budget = QueueBudget(3)
    ChatDispatcher.budget = budget
    yield budget
    ChatDispatcher.budget = None


def updates(first: int, n: int, chat: int = 7) -> list[dict[str, Any]]:
    return [
        {"update_id": first + i, "message": {"chat": {"id": chat + i}, "text": "hi"}}
        for i in range(n)
    ]


async def test_queued_updates_count_worker_wide_and_never_drop(budget: QueueBudget) -> None:
    release = asyncio.Event()
    handled: list[int] = []

    async def handle(update: Incoming) -> None:
        await release.wait()
        handled.append(update.update_id)

    a = ChatDispatcher(1, handle, ActorStats())
    b = ChatDispatcher(2, handle, ActorStats())
    assert a.submit(updates(1, 2)) == 2
    assert b.submit(updates(10, 3)) == 3  # past the cap: still queued, nothing dropped
    assert budget.queued == 5 and budget.full()
    waiter = asyncio.create_task(budget.wait_room())
    await asyncio.sleep(0)
    assert not waiter.done()  # a poll would wait here
    release.set()
    async with asyncio.timeout(5):
        await waiter
        while budget.queued:
            await a.wait_progress(a.progress())
    assert sorted(handled) == [1, 2, 10, 11, 12] and budget.pauses == 1


async def test_cancelled_chat_tasks_leave_the_count(budget: QueueBudget) -> None:
    async def handle(update: Incoming) -> None:
        await asyncio.Event().wait()  # never finishes

    d = ChatDispatcher(1, handle, ActorStats())
    d.submit(updates(1, 2, chat=5) + [{"update_id": 3, "message": {"chat": {"id": 5}}}])
    assert budget.queued == 3
    assert not await d.drain(0.01)
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert budget.queued == 0


async def test_gated_poll_waits_for_room(
    budget: QueueBudget, monkeypatch: pytest.MonkeyPatch
) -> None:
    polled: list[dict[str, Any]] = []

    async def fake_poll(self: BotApi, params: dict[str, Any], *, timeout: float) -> Any:
        polled.append(params)
        return []

    monkeypatch.setattr(BotApi, "poll", fake_poll)
    api = GatedBotApi(
        None,  # type: ignore[arg-type]
        "http://127.0.0.1:9",
        BotToken(f"1:{'A' * 35}"),
        BotLimiter(Limits.telegram_defaults()),
        request_timeout=1,
        max_retries=0,
        gate=budget,
    )
    budget.add(3)
    task = asyncio.create_task(api.poll({"timeout": 1}, timeout=2))
    await asyncio.sleep(0)
    assert polled == [] and not task.done()
    budget.add(-1)
    async with asyncio.timeout(5):
        assert await task == []
    assert len(polled) == 1


def test_bounds_export_bytes_entries_keys_and_queued(settings: Settings) -> None:
    from prometheus_client import REGISTRY

    class Store:
        cache_budget = CacheBudget(10_000)

    cache = ChatCache(100, 100_000, 60, budget=Store.cache_budget)
    cache.put(ctx(1, 1))
    cache.put(ctx(1, 2))
    bounds = WorkerBounds(settings)
    bounds.chat_keys = 7
    bounds.queue.add(3)
    bounds.export(Store())  # type: ignore[arg-type]
    sample = REGISTRY.get_sample_value
    assert sample("botvisor_context_cache_bytes") == Store.cache_budget.bytes > 0
    assert sample("botvisor_context_cache_entries") == 2
    assert sample("botvisor_ratelimit_chat_keys") == 7
    assert sample("botvisor_queued_updates") == 3
