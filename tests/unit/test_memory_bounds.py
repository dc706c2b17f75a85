"""Bounded memory per worker: the context cache's worker-wide byte cap (LRU across bots)."""

from __future__ import annotations

from context.lru import CacheBudget, ChatCache
from context.model import Context, Message


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
