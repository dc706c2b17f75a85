"""Outgoing rate limiting for one bot: the bot scope plus one scope per chat.

Runs in the bot actor's event loop; `acquire` is awaited at the session seam
before every Bot API call that sends to a chat.

Composition: a caller takes its chat's FIFO lock, sleeps until the chat window
allows, then joins the bot's FIFO lock, sleeps until the bot window allows and
records the same grant time (`now`) in both windows before returning. Grants are
therefore made only at the moment the message may go out, never in advance, so
a later 429 (`penalize`) or `retune` applies to every caller still waiting, and
every window logs the actual send time. A chat has at most one caller in the
bot queue at a time, so chats share the bot's rate in turn and one busy group
cannot starve the rest.

Bulk lane (broadcasts, `acquire(..., bulk=True)`): one bulk caller at a time contends
for the bot, only while no ordinary caller (a reply) waits for it, and bulk grants are
spread evenly (one per `period / limit`) instead of bursting the window full. A reply
arriving during a broadcast therefore takes the very next slot the window frees: it
waits at most one slot behind broadcast traffic, never behind a queue of it.

The numbers are `Limits` (limits.py); each chat's window and lock is a key
(chat_keys.py); `Window` (window.py) is the rule of one scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ratelimit.chat_keys import ChatKey, enter_key, evict_idle_keys, key_for, leave_key
from ratelimit.limits import Limits
from ratelimit.window import Window


@dataclass(frozen=True, slots=True)
class LimiterStats:
    #: Grants made.
    acquires: int
    #: Grants whose caller had to sleep for a window or a 429.
    waits: int
    #: Time from calling acquire to its grant, summed over grants.
    wait_seconds_total: float
    #: 429s reported through penalize.
    penalties: int
    #: Chat keys held (busy ones plus idle ones not yet evicted).
    chat_keys: int
    #: Callers inside acquire right now.
    waiting: int
    #: Grants made in the bulk lane (broadcasts); not counted in `acquires`/`waits`.
    bulk_acquires: int = 0


class BotLimiter:
    """Telegram's outgoing limits for one bot; one instance per bot actor."""

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._sleep = sleep
        self._bot = Window(limits.per_bot.limit, limits.per_bot.period_s + limits.margin_s)
        self._bot_lock = asyncio.Lock()
        # Least recently used first, so idle keys collect at the front.
        self._keys: OrderedDict[int, ChatKey] = OrderedDict()
        self._acquires = 0
        self._waits = 0
        self._wait_seconds_total = 0.0
        self._penalties = 0
        self._waiting = 0
        # the bulk lane (see the module docstring)
        self._bulk_lock = asyncio.Lock()
        self._bulk_next = -math.inf
        self._bulk_acquires = 0
        self._urgent = 0  # ordinary callers waiting for (or holding) the bot lock
        self._calm: asyncio.Event | None = None  # set when _urgent drops to 0
        # set (and dropped) by settle while someone waits for an answer; see acquire.
        # Made on demand: 10,000 idle bots should not hold an Event each.
        self._answered: asyncio.Event | None = None

    @property
    def limits(self) -> Limits:
        return self._limits

    async def acquire(
        self, chat_id: int | None, *, hold: bool = False, bulk: bool = False
    ) -> float:
        """Return when one message to `chat_id` may be sent now (None: no chat scope).

        Runs in the actor's event loop. Callers to the same chat are granted in
        call order. A cancelled caller leaves no trace and no slot behind.
        Returns the grant time, for `settle` once the request has been answered.
        With `hold` (the API seam) the grant counts as in flight until `settle`, so
        the grant that would share a window with its arrival waits for its answer: a
        request delayed on its way (a queue for a pooled connection, a lagging loop at
        either end) can never land inside a later one's window. The caller must settle.
        `bulk`: the low-priority lane (broadcasts), which yields to every other caller.
        """
        start = self._clock()
        self._waiting += 1
        key = None if chat_id is None else enter_key(self._keys, chat_id, self._limits, start)
        try:
            if bulk:
                grant = await self._acquire_bulk(key, hold)
            elif key is None:
                async with self._urgently():
                    slept = await self._wait_for(self._bot)
                    grant = self._bot.reserve(self._clock(), hold=hold)
            else:
                grant, slept = await self._acquire_chat(key, hold)
        finally:
            self._waiting -= 1
            if key is not None:
                leave_key(key)
        if bulk:
            self._bulk_acquires += 1
            return grant
        self._acquires += 1
        self._waits += slept
        self._wait_seconds_total += grant - start
        return grant

    def settle(self, chat_id: int | None, granted: float) -> None:
        """The request granted at `granted` was answered now: count it from now on.

        Runs in the actor's event loop; never blocks. See `Window.settle`.
        """
        done = self._clock()
        self._bot.settle(granted, done)
        if chat_id is not None:
            key = self._keys.get(chat_id)
            if key is not None:
                key.window.settle(granted, done)
        if self._answered is not None:
            self._answered.set()
            self._answered = None

    async def _acquire_chat(self, key: ChatKey, hold: bool) -> tuple[float, bool]:
        assert key.lock is not None  # set by enter_key while users > 0
        slept = False
        async with key.lock:
            while True:
                # Wait for the chat outside the bot queue, so one slow group never
                # holds up the bot's other chats.
                slept = await self._wait_for(key.window) or slept
                async with self._urgently():
                    slept = await self._wait_for(self._bot) or slept
                    now = self._clock()
                    if key.window.earliest(now) <= now:
                        grant = self._bot.reserve(now, hold=hold)
                        key.window.reserve(grant, hold=hold)
                        return grant, slept
                # A 429 or retune closed the chat while we queued for the bot: wait again.

    @contextlib.asynccontextmanager
    async def _urgently(self) -> AsyncIterator[None]:
        """The bot lock for an ordinary caller, counted so the bulk lane yields to it."""
        self._urgent += 1
        try:
            async with self._bot_lock:
                yield
        finally:
            self._urgent -= 1
            if self._urgent == 0 and self._calm is not None:
                self._calm.set()
                self._calm = None

    async def _acquire_bulk(self, key: ChatKey | None, hold: bool) -> float:
        """The bulk lane: one bulk caller at a time, paced evenly, after every reply."""
        async with self._bulk_lock:
            chat_lock = key.lock if key is not None else None
            async with chat_lock if chat_lock is not None else contextlib.nullcontext():
                while True:
                    if key is not None:
                        await self._wait_for(key.window)
                    await self._wait_until(self._bulk_next)
                    while self._urgent:
                        if self._calm is None:
                            self._calm = asyncio.Event()
                        await self._calm.wait()
                    async with self._bot_lock:
                        await self._wait_for(self._bot)
                        now = self._clock()
                        if self._urgent:
                            continue  # a reply came while we slept: the slot is its
                        if key is not None and key.window.earliest(now) > now:
                            continue  # a 429 or retune closed the chat meanwhile
                        grant = self._bot.reserve(now, hold=hold)
                        if key is not None:
                            key.window.reserve(grant, hold=hold)
                        # a late wake-up (loop jitter, a few ms) is made up at the next
                        # grant instead of slowing every later one; a slot a reply took is
                        # not: catching that up would bunch grants and leave gaps
                        spacing = self._bot.period / self._bot.limit
                        late = min(max(0.0, grant - self._bulk_next), spacing / 4)
                        self._bulk_next = grant + spacing - late
                        return grant

    async def _wait_until(self, t: float) -> None:
        while (now := self._clock()) < t:
            await self._sleep(t - now)

    async def _wait_for(self, window: Window) -> bool:
        """Sleep until `window` allows a grant; True if it had to sleep.

        Sleeps again only if the deadline moved while it slept (a 429 or a
        retune) or the sleep returned a hair early; it never polls.
        """
        slept = False
        while True:
            now = self._clock()
            t = window.earliest(now)
            if t <= now:
                return slept
            slept = True
            if window.waits_for_answer(now):
                await self._wait_answer(t - now)
            else:
                await self._sleep(t - now)

    async def _wait_answer(self, at_most: float) -> None:
        """Sleep until any of this bot's requests is answered (`settle`), or `at_most`."""
        if self._answered is None:
            self._answered = asyncio.Event()
        # raced against the injected sleep, so virtual-time tests drive this path too
        waits = [
            asyncio.ensure_future(self._answered.wait()),
            asyncio.ensure_future(self._sleep(at_most)),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def penalize(self, chat_id: int | None, retry_after: float) -> None:
        """Telegram answered 429: nothing more for this bot (and chat) before now + retry_after.

        Runs in the actor's event loop; never blocks. A deadline, not an event:
        callers finishing concurrently cannot lift it early (python-telegram-bot#5338).
        """
        until = self._clock() + retry_after
        self._penalties += 1
        self._bot.block_until(until)
        if chat_id is not None:
            key_for(self._keys, chat_id, self._limits).window.block_until(until)

    def retune(self, limits: Limits) -> None:
        """Apply new limits in place, keeping what was already sent (a bot's settings changed).

        Callers already asleep wake at their old deadline and re-check.
        """
        self._limits = limits
        self._bot.retune(limits.per_bot.limit, limits.per_bot.period_s + limits.margin_s)
        for chat_id, key in self._keys.items():
            rate = limits.rate_for(chat_id)
            key.window.retune(rate.limit, rate.period_s + limits.margin_s)

    @property
    def waits(self) -> int:
        """`statistics().waits` without building the record: the worker reads it for
        every bot every heartbeat (5,000 frozen dataclasses a second per worker)."""
        return self._waits

    @property
    def chat_keys(self) -> int:
        """`statistics().chat_keys`, cheaply (see `waits`)."""
        return len(self._keys)

    def statistics(self) -> LimiterStats:
        return LimiterStats(
            acquires=self._acquires,
            waits=self._waits,
            wait_seconds_total=self._wait_seconds_total,
            penalties=self._penalties,
            chat_keys=len(self._keys),
            waiting=self._waiting,
            bulk_acquires=self._bulk_acquires,
        )

    def evict_idle(self) -> int:
        """Drop every chat key nobody uses whose window no longer constrains a send
        (the worker calls it when its chat keys pass `ratelimit.chat_keys_worker_max`).
        Keys still limiting a send are kept: dropping them could earn a 429."""
        return evict_idle_keys(self._keys, self._clock())
