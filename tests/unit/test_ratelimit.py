"""ratelimit: the pure sliding window and the per-bot limiter, in virtual time.

Nothing here sleeps for real. `VirtualTime` is an autojump clock in the style of
trio's MockClock: whenever every task is blocked, time jumps to the earliest
sleeper's deadline and wakes the sleepers due then, in the order they slept.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratelimit import BotLimiter, Limits, Rate, Window, chat_scope
from ratelimit.window import HOLD_MAX_S

T = TypeVar("T")

PROPERTY = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


class VirtualTime:
    """A fake clock plus `sleep`, driven by `run()`; concurrency stays real asyncio."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        await self._wait(self.now + max(delay, 0.0))

    async def sleep_until(self, t: float) -> None:
        await self._wait(max(t, self.now))

    async def _wait(self, t: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (t, next(self._seq), fut))
        await fut

    async def run(self, main: Coroutine[Any, Any, T]) -> T:
        task = asyncio.create_task(main)
        while True:
            await self._settle()
            if task.done():
                return task.result()
            self._jump()

    async def _settle(self) -> None:
        """Return once no task can run without time passing."""
        # CPython's loop keeps runnable callbacks in `_ready`; when it is empty while
        # we run, every other task is blocked on a future.
        ready = asyncio.get_running_loop()._ready  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        while ready:  # noqa: ASYNC110 - yielding to the loop is the point; nothing to wait on
            await asyncio.sleep(0)

    def _jump(self) -> None:
        timers = self._timers
        while timers and timers[0][2].done():  # cancelled sleepers
            heapq.heappop(timers)
        if not timers:
            raise AssertionError("deadlock: every task is blocked and nobody is sleeping")
        self.now = max(self.now, timers[0][0])
        while timers and timers[0][0] <= self.now:
            fut = heapq.heappop(timers)[2]
            if not fut.done():
                fut.set_result(None)


def limiter_in(vt: VirtualTime, limits: Limits) -> BotLimiter:
    return BotLimiter(limits, clock=vt.clock, sleep=vt.sleep)


def run(vt: VirtualTime, main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(vt.run(main))


TELEGRAM = Limits(Rate(30, 1.0), Rate(1, 1.0), Rate(20, 60.0), margin_s=0.025)


@dataclass(frozen=True)
class Grant:
    call_seq: int  # order in which acquire was called
    return_seq: int  # order in which acquire returned
    chat_id: int | None
    arrival: float
    at: float  # the clock when acquire returned


@dataclass(frozen=True)
class Call:
    arrival: float
    chat_id: int | None
    cancel_after: float | None = None


async def offer(
    vt: VirtualTime,
    limiter: BotLimiter,
    calls: Sequence[Call],
    grants: list[Grant] | None = None,
) -> list[Grant]:
    """Run every call as its own task; return the grants (cancelled calls have none).

    Grants are appended to `grants` as they happen, so a caller can look before all are done.
    """
    grants = [] if grants is None else grants
    call_seq = itertools.count()
    return_seq = itertools.count()

    async def one(call: Call) -> None:
        await vt.sleep_until(call.arrival)
        seq = next(call_seq)
        await limiter.acquire(call.chat_id)
        grants.append(Grant(seq, next(return_seq), call.chat_id, call.arrival, vt.now))

    async def cancel_later(task: asyncio.Task[None], at: float) -> None:
        await vt.sleep_until(at)
        task.cancel()

    tasks = []
    for call in sorted(calls, key=lambda c: c.arrival):
        task = asyncio.create_task(one(call))
        tasks.append(task)
        if call.cancel_after is not None:
            tasks.append(asyncio.create_task(cancel_later(task, call.arrival + call.cancel_after)))
    await asyncio.gather(*tasks, return_exceptions=True)
    return grants


def assert_sliding(times: Sequence[float], limit: int, period: float, what: str) -> None:
    """No window [t, t + period) holds more than `limit` of `times`."""
    ts = sorted(times)
    for i in range(len(ts) - limit):
        assert ts[i + limit] >= ts[i] + period, (
            f"{what}: {limit + 1} grants within {period}s: {ts[i : i + limit + 1]}"
        )


def assert_limits_hold(grants: Sequence[Grant], limits: Limits) -> None:
    m = limits.margin_s
    bot = limits.per_bot
    assert_sliding([g.at for g in grants], bot.limit, bot.period_s + m, "bot")
    by_chat: dict[int, list[Grant]] = defaultdict(list)
    for g in grants:
        assert g.at >= g.arrival
        if g.chat_id is not None:
            by_chat[g.chat_id].append(g)
    for chat_id, gs in by_chat.items():
        rate = limits.per_chat if chat_id > 0 else limits.per_group
        assert_sliding([g.at for g in gs], rate.limit, rate.period_s + m, f"chat {chat_id}")
        # FIFO per chat: returned in the order called.
        by_call = sorted(gs, key=lambda g: g.call_seq)
        assert [g.return_seq for g in by_call] == sorted(g.return_seq for g in gs)


# --- the pure window -----------------------------------------------------------------

arrivals = st.lists(st.floats(min_value=0, max_value=50, allow_nan=False), max_size=150).map(sorted)
limits_ = st.integers(min_value=1, max_value=40)
periods = st.floats(min_value=0.01, max_value=20, allow_nan=False)


@PROPERTY
@given(arrivals, limits_, periods)
def test_window_grants_are_monotone_and_never_overfill_a_window(
    times: list[float], limit: int, period: float
) -> None:
    w = Window(limit, period)
    grants = [w.reserve(a) for a in times]
    assert grants == sorted(grants)
    assert all(g >= a for g, a in zip(grants, times, strict=True))
    assert_sliding(grants, limit, period, "window")


@PROPERTY
@given(arrivals, limits_, periods, st.none() | st.tuples(st.integers(0, 150), periods))
def test_window_grants_as_early_as_allowed(
    times: list[float], limit: int, period: float, block: tuple[int, float] | None
) -> None:
    """A grant is late only until the limit-th previous grant leaves the window, or a 429 ends."""
    w = Window(limit, period)
    grants: list[float] = []
    blocked_until = -math.inf
    for i, a in enumerate(times):
        if block is not None and block[0] == i:
            blocked_until = a + block[1]
            w.block_until(blocked_until)
        g = w.reserve(a)
        grants.append(g)
        if g > a:
            assert g == blocked_until or (i >= limit and g == grants[i - limit] + period)
    # Full rate: `limit` grants per period under overload, from an idle start.
    w2 = Window(limit, period)
    burst = [w2.reserve(0.0) for _ in range(3 * limit)]
    assert burst[:limit] == [0.0] * limit
    assert burst[-1] == 0.0 + period + period


@PROPERTY
@given(arrivals, limits_, periods, st.floats(0, 100))
def test_window_idle_means_it_constrains_nothing(
    times: list[float], limit: int, period: float, block: float
) -> None:
    w = Window(limit, period)
    for a in times:
        w.reserve(a)
    w.block_until(block)
    for now in [*times, block, w.last() + period, max(w.last() + period, block) + 1]:
        fresh = Window(limit, period)
        if w.idle(now):
            # Evicting it and starting afresh changes nothing from now on.
            assert w.earliest(now) == fresh.earliest(now) == now
        else:
            assert now < w.last() + period or now < block


@PROPERTY
@given(arrivals, limits_, periods, limits_, periods, st.integers(0, 150))
def test_window_retune_applies_the_new_rule_across_the_change(
    times: list[float], limit: int, period: float, limit2: int, period2: float, at: int
) -> None:
    w = Window(limit, period)
    grants: list[float] = []
    for i, a in enumerate(times):
        if i == at:
            w.retune(limit2, period2)
        grants.append(w.reserve(a))
    assert grants == sorted(grants)
    for j in range(max(at, limit2), len(grants)):
        # The grants before the change count against the new limit: no burst on lowering.
        assert grants[j] >= grants[j - limit2] + period2


def test_window_raising_the_limit_frees_the_new_slots_at_once() -> None:
    w = Window(2, 1.0)
    assert [w.reserve(0.0), w.reserve(0.0), w.earliest(0.5)] == [0.0, 0.0, 1.0]
    w.retune(5, 1.0)
    assert [w.reserve(0.5) for _ in range(4)] == [0.5, 0.5, 0.5, 1.0]


def test_window_block_only_extends_and_rejects_nonsense() -> None:
    w = Window(2, 1.0)
    w.block_until(5.0)
    w.block_until(3.0)
    assert w.earliest(0.0) == 5.0
    assert not w.idle(4.0) and w.idle(5.0)
    with pytest.raises(ValueError, match="rate limit"):
        Window(0, 1.0)
    with pytest.raises(ValueError, match="period"):
        Window(1, 0.0)


def test_chat_scope_by_sign() -> None:
    assert chat_scope(42) == "private"
    assert chat_scope(-1001234567890) == "group"
    assert chat_scope(None) is None
    with pytest.raises(ValueError, match="pass None"):
        chat_scope(0)


def test_limits_defaults_come_from_config() -> None:
    from config.sections.messaging import RateLimitSection

    assert Limits.telegram_defaults() == Limits.from_settings(RateLimitSection.model_validate({}))
    assert Limits.telegram_defaults() == TELEGRAM
    with pytest.raises(ValueError, match="limit"):
        Rate(0, 1.0)


# --- the limiter in virtual time -----------------------------------------------------

small_limits = st.builds(
    Limits,
    per_bot=st.builds(Rate, st.integers(1, 8), st.sampled_from([0.5, 1.0, 2.0])),
    per_chat=st.builds(Rate, st.integers(1, 2), st.sampled_from([0.5, 1.0, 3.0])),
    per_group=st.builds(Rate, st.integers(1, 4), st.sampled_from([2.0, 5.0, 10.0])),
    margin_s=st.sampled_from([0.0, 0.025, 0.1]),
    idle_keys_max=st.integers(0, 5),
)
chats = st.sampled_from([None, 1, 2, 3, 4, 5, 6, -1, -2, -3])
calls = st.lists(
    st.builds(
        Call,
        arrival=st.floats(0, 10, allow_nan=False),
        chat_id=chats,
        cancel_after=st.none() | st.floats(0, 3, allow_nan=False),
    ),
    max_size=60,
)


@PROPERTY
@given(small_limits | st.just(TELEGRAM), calls)
def test_concurrent_callers_never_exceed_any_limit_and_chats_stay_fifo(
    limits: Limits, offered: list[Call]
) -> None:
    vt = VirtualTime()
    limiter = limiter_in(vt, limits)
    grants = run(vt, offer(vt, limiter, offered))

    assert_limits_hold(grants, limits)
    # Cancelled callers leave nothing stuck: everyone else got through.
    assert len(grants) >= sum(1 for c in offered if c.cancel_after is None)
    stats = limiter.statistics()
    assert stats.acquires == len(grants) and stats.waiting == 0
    # Sleeps end exactly at a deadline (an arrival, or a grant leaving a window), never at a poll tick.
    m = limits.margin_s
    deadlines = sorted(
        [c.arrival for c in offered]
        + [g.at + limits.per_bot.period_s + m for g in grants]
        + [g.at + limits.per_chat.period_s + m for g in grants]
        + [g.at + limits.per_group.period_s + m for g in grants]
    )
    for g in grants:
        i = bisect.bisect_left(deadlines, g.at - 1e-9)
        assert i < len(deadlines) and deadlines[i] <= g.at + 1e-9, g


@settings(deadline=None, max_examples=3)
@given(st.integers(0, 2**32))
def test_bot_at_ten_times_offered_load_gets_95_percent_of_30_per_second(seed: int) -> None:
    rnd = random.Random(seed)
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)
    # 300/s for 20 s to distinct chats (a broadcast), a tenth of them groups.
    offered = [
        Call(rnd.uniform(0, 20), rnd.choice([1, -1]) * rnd.randrange(1, 10**12))
        for _ in range(6000)
    ]

    async def main() -> list[Grant]:
        grants: list[Grant] = []
        task = asyncio.create_task(offer(vt, limiter, offered, grants))
        await vt.sleep_until(20.0)
        task.cancel()  # the backlog is irrelevant: count what 20 s delivered
        # Once every window has emptied, one more send sweeps away all the keys,
        # the thousands of cancelled callers' included.
        await offer(vt, limiter, [Call(100.0, 7)])
        return grants

    grants = run(vt, main())
    in_20s = [g for g in grants if g.at < 20.0]
    assert len(in_20s) >= 0.95 * 30 * 20
    assert_sliding([g.at for g in grants], 30, 1.025, "bot")
    stats = limiter.statistics()
    assert stats.chat_keys == 1 and stats.waiting == 0


async def test_penalize_holds_everything_for_that_bot_until_retry_after() -> None:
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)

    async def main() -> tuple[list[Grant], float]:
        task = asyncio.create_task(offer(vt, limiter, [Call(0.0, i) for i in range(1, 61)]))
        await vt.sleep_until(0.5)  # 30 granted at 0, 30 waiting
        limiter.penalize(7, 5)
        limiter.penalize(None, 1)  # a shorter 429 later must not shorten the first
        penalized_at = vt.now
        late = await offer(vt, limiter, [Call(0.6, 7), Call(0.6, None), Call(0.7, 99)])
        return (await task) + late, penalized_at

    grants, t = await vt.run(main())
    after = [g for g in grants if g.at > 0]
    assert len(after) == 33
    assert min(g.at for g in after) == t + 5
    # Released at the deadline, yet still at most 30 per window.
    assert_limits_hold(grants, TELEGRAM)
    assert limiter.statistics().penalties == 2


async def test_penalize_on_a_chat_delays_that_chat_past_its_own_window() -> None:
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)

    async def main() -> list[Grant]:
        first = await offer(vt, limiter, [Call(0.0, 5)])
        limiter.penalize(5, 3)
        return first + await offer(vt, limiter, [Call(0.0, 5)])

    grants = await vt.run(main())
    assert [g.at for g in grants] == [0.0, 3.0]


async def test_idle_chat_keys_are_evicted() -> None:
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)
    # 1000 private chats, one every 0.1 s; each constrains nothing 1.025 s later.
    await vt.run(offer(vt, limiter, [Call(i * 0.1, i + 1) for i in range(1000)]))
    assert limiter.statistics().chat_keys <= 12


async def test_idle_keys_max_reaches_idle_keys_behind_a_busy_one() -> None:
    vt = VirtualTime()
    limits = Limits(Rate(30, 1.0), Rate(1, 1.0), Rate(1, 60.0), idle_keys_max=10)
    limiter = limiter_in(vt, limits)

    async def main() -> list[Grant]:
        # The group key stays informative for 60 s at the LRU front; without
        # rotation the 200 idle private keys behind it would all be kept.
        grants = await offer(vt, limiter, [Call(0.0, -1)])
        grants += await offer(vt, limiter, [Call(0.1 * i, i) for i in range(1, 201)])
        # 12 keys still constrain sends (the group, and chats served in the last
        # 1.025 s); the idle ones beyond them stay within idle_keys_max.
        assert limiter.statistics().chat_keys <= 12 + 10
        return grants + await offer(vt, limiter, [Call(vt.now, -1)])

    grants = await vt.run(main())
    # The busy group key was kept: its next message still waited out the 60 s window.
    assert grants[-1].chat_id == -1 and grants[-1].at == 60.025


async def test_a_key_with_a_waiter_is_not_evicted() -> None:
    vt = VirtualTime()
    limits = Limits(Rate(30, 1.0), Rate(1, 1.0), Rate(20, 60.0), idle_keys_max=0)
    limiter = limiter_in(vt, limits)

    async def main() -> list[Grant]:
        first = await offer(vt, limiter, [Call(0.0, 1)])
        limiter.penalize(None, 10)  # the bot is closed until 10
        # Chat 300's window is empty, but A waits in it: evicting the key would let
        # B in with a fresh window, and both would go at 10.
        rest = offer(vt, limiter, [Call(0.1, 300), Call(2.0, 4), Call(3.0, 300)])
        return first + await rest

    grants = await vt.run(main())
    chat300 = [g.at for g in grants if g.chat_id == 300]
    assert chat300 == [10.0, 11.025]


async def test_cancelled_waiters_do_not_block_or_waste_slots() -> None:
    vt = VirtualTime()
    limits = Limits(Rate(2, 1.0), Rate(1, 1.0), Rate(20, 60.0), margin_s=0.0)
    limiter = limiter_in(vt, limits)
    offered = [
        Call(0.0, 1),
        Call(0.0, 2),  # the bot is full until 1.0
        Call(0.1, 1, cancel_after=0.2),  # waits on chat 1's window, cancelled
        Call(0.2, 3, cancel_after=0.2),  # head of the bot queue, asleep, cancelled
        Call(0.3, 1),  # takes chat 1's lock after the cancelled one
        Call(0.3, 4),
    ]
    grants = await vt.run(offer(vt, limiter, offered))
    assert sorted((g.chat_id, g.at) for g in grants) == [(1, 0.0), (1, 1.0), (2, 0.0), (4, 1.0)]
    assert limiter.statistics().chat_keys <= 4


async def test_retune_changes_the_bot_rate_in_place() -> None:
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)
    slow = Limits(Rate(5, 1.0), Rate(1, 1.0), Rate(20, 60.0), margin_s=0.025)

    async def retune_later() -> None:
        await vt.sleep_until(2.5)
        limiter.retune(slow)

    async def main() -> list[Grant]:
        calls = [Call(0.0, None) for _ in range(200)]
        grants, _ = await asyncio.gather(offer(vt, limiter, calls), retune_later())
        return grants

    times = sorted(g.at for g in await vt.run(main()))
    assert len([t for t in times if t < 2.5]) == 90  # 30 at 0, 1.025 and 2.05
    after = [j for j, t in enumerate(times) if t >= 2.5]
    # The new limit counts the grants made before the change: no burst at the switch.
    assert all(times[j] >= times[j - 5] + 1.025 for j in after)
    # ... and the new rate is fully used: 5 per 1.025 s from 2.05 + 1.025 on.
    assert times[after[0]] == 2.05 + 1.025
    assert len([t for t in times if 2.5 <= t < 2.5 + 5 * 1.025]) == 25
    assert limiter.limits == slow


async def test_retune_applies_to_existing_chat_keys() -> None:
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)
    slower_chats = Limits(Rate(30, 1.0), Rate(1, 3.0), Rate(1, 60.0), margin_s=0.025)

    async def main() -> list[Grant]:
        grants = await offer(vt, limiter, [Call(0.0, 1), Call(0.0, -1)])
        await vt.sleep_until(0.5)
        limiter.retune(slower_chats)
        return grants + await offer(vt, limiter, [Call(0.5, 1), Call(0.5, -1)])

    grants = await vt.run(main())
    assert sorted((g.chat_id or 0, g.at) for g in grants) == [
        (-1, 0.0),
        (-1, 60.025),
        (1, 0.0),
        (1, 3.025),
    ]


async def test_a_chat_closed_while_its_caller_queues_for_the_bot_is_waited_out() -> None:
    vt = VirtualTime()
    limits = Limits(Rate(1, 2.0), Rate(1, 1.0), Rate(20, 60.0), margin_s=0.0)
    limiter = limiter_in(vt, limits)
    slower_chat = Limits(Rate(1, 2.0), Rate(1, 5.0), Rate(20, 60.0), margin_s=0.0)

    async def retune_later() -> None:
        await vt.sleep_until(1.5)  # the second caller passed chat 1 at 1.0, waits for the bot
        limiter.retune(slower_chat)

    async def main() -> list[Grant]:
        grants, _ = await asyncio.gather(
            offer(vt, limiter, [Call(0.0, 1), Call(0.5, 1)]), retune_later()
        )
        return grants

    grants = await vt.run(main())
    # The bot would allow it at 2.0, but chat 1 now needs 5 s after its grant at 0.
    assert [g.at for g in grants] == [0.0, 5.0]


async def test_statistics_count_waits() -> None:
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)
    await vt.run(offer(vt, limiter, [Call(0.0, 9), Call(0.0, 9), Call(0.0, None)]))
    stats = limiter.statistics()
    assert (stats.acquires, stats.waits, stats.penalties, stats.waiting) == (3, 1, 0, 0)
    assert stats.wait_seconds_total == 1.025


def test_window_a_held_grant_keeps_its_slot_until_answered() -> None:
    w = Window(1, 1.0)
    g = w.reserve(0.0, hold=True)
    assert w.earliest(5.0) == HOLD_MAX_S  # time alone frees nothing (until the cap)
    assert w.waits_for_answer(5.0) and not w.idle(100.0)
    w.settle(g, 5.0)  # answered at 5: the next may go one period after the answer
    assert w.earliest(5.0) == 6.0 and not w.waits_for_answer(5.0)
    assert w.idle(6.0)
    w.reserve(6.0)  # an unheld grant counts from its grant, as before
    assert w.earliest(6.5) == 7.0


async def test_a_request_in_flight_holds_the_grant_that_would_share_its_window() -> None:
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)

    async def main() -> tuple[float, bool, float]:
        first = await limiter.acquire(5, hold=True)  # at 0; its answer comes at 3
        second = asyncio.create_task(limiter.acquire(5, hold=True))
        await vt.sleep_until(3.0)
        waited = not second.done()
        limiter.settle(5, first)
        return first, waited, await second

    first, waited, second = await vt.run(main())
    assert first == 0.0 and waited
    assert second == 3.0 + 1.025  # one period (plus margin) after the answer, not the grant


async def test_the_bot_window_waits_for_the_oldest_answer_when_full() -> None:
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)

    async def main() -> float:
        grants = [await limiter.acquire(None, hold=True) for _ in range(30)]
        late = asyncio.create_task(limiter.acquire(None, hold=True))
        await vt.sleep_until(2.0)
        for g in grants[1:]:
            limiter.settle(None, g)  # all but the oldest answered at 2
        await vt.sleep_until(4.0)
        assert not late.done()  # the oldest may still be on its way
        limiter.settle(None, grants[0])
        return await late

    assert await vt.run(main()) == 4.0 + 1.025


def test_virtual_time_is_fifo_for_equal_deadlines() -> None:
    vt = VirtualTime()
    order: list[int] = []

    async def sleeper(i: int) -> None:
        await vt.sleep(1.0)
        order.append(i)

    async def main() -> None:
        await asyncio.gather(*(sleeper(i) for i in range(5)))

    run(vt, main())
    assert order == [0, 1, 2, 3, 4] and vt.now == 1.0


# -- the bulk lane (broadcasts) ---------------------------------------------------------------


def test_bulk_lane_runs_at_the_bot_limit_and_a_reply_takes_the_next_free_slot() -> None:
    """8 broadcast senders saturate the bot for 20 s while a reply arrives every 0.37 s:
    no broadcast message is granted between a reply's arrival and its grant (the reply
    takes the very next slot the window frees), the broadcast still gets >= 95% of
    30/s, and together they never break a window."""
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)
    slot = 1.025 / 30
    bulk_at: list[float] = []
    replies_at: list[tuple[float, float]] = []  # (arrival, grant)

    async def sender(lane: int) -> None:
        for i in itertools.count():
            chat_id = 1_000_000 + lane * 100_000 + i
            await limiter.acquire(chat_id, bulk=True)
            bulk_at.append(vt.now)

    async def replies() -> None:
        for i in range(50):
            await vt.sleep_until(0.5 + i * 0.37)
            arrived = vt.now
            await limiter.acquire(i + 1)
            replies_at.append((arrived, vt.now))

    async def main() -> None:
        senders = [asyncio.create_task(sender(n)) for n in range(8)]
        await replies()
        await vt.sleep_until(20.0)
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)

    run(vt, main())
    assert len(replies_at) == 50
    for arrived, granted in replies_at:
        assert not [t for t in bulk_at if arrived < t < granted]  # never behind a broadcast
        assert granted - arrived <= 3 * slot  # the window's next free slot
    in_20s = [t for t in bulk_at if t < 20.0]
    assert len(in_20s) + 50 >= 0.95 * 30 * 20
    assert_sliding(sorted(bulk_at + [g for _, g in replies_at]), 30, 1.025, "bot")
    gaps = [b - a for a, b in itertools.pairwise(sorted(bulk_at))]
    assert min(gaps) >= 0.75 * slot - 1e-9  # spread out: never a burst that fills the window
    assert limiter.statistics().bulk_acquires == len(bulk_at)


async def test_without_the_bulk_lane_a_reply_queues_behind_the_broadcast() -> None:
    """The baseline the lane fixes: ordinary senders queue FIFO ahead of a reply."""
    vt = VirtualTime()
    limiter = limiter_in(vt, TELEGRAM)
    waited: list[float] = []

    async def main() -> None:
        bulk = [asyncio.create_task(limiter.acquire(10_000 + i)) for i in range(60)]
        await vt.sleep_until(0.1)
        await limiter.acquire(1)
        waited.append(vt.now - 0.1)
        await asyncio.gather(*bulk)

    await vt.run(main())
    assert waited[0] > 0.5  # behind ~30 queued sends
