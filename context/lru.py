"""A bot's in-memory cache of chat contexts: LRU bounded by entries and bytes, with a TTL,
and a worker-wide byte budget shared by every bot's cache (LRU across bots).

Runs in the worker's event loop; no awaits, so no locking. A hit is a dict lookup,
a clock read and a move to the end (of the bot's order and of the worker's).
Evicting is always safe: an evicted context reloads from Redis (or PostgreSQL).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from context.model import Context


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    entries: int
    bytes: int
    evictions: int
    expirations: int


class CacheBudget:
    """The worker's byte cap over every ChatCache that shares it: past `max_bytes` the
    least recently used chat of any bot is evicted. `max_bytes=0` disables caching."""

    __slots__ = ("_order", "bytes", "evictions", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # (cache, chat_id) -> charged bytes, least recently used first
        self._order: OrderedDict[tuple[ChatCache, int], int] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._order)

    def touch(self, cache: ChatCache, chat_id: int) -> None:
        key = (cache, chat_id)
        if key in self._order:
            self._order.move_to_end(key)

    def charge(self, cache: ChatCache, chat_id: int, size: int) -> None:
        """`cache` now holds `size` bytes for `chat_id`: evict others' (LRU) if over."""
        self.release(cache, chat_id)
        self._order[(cache, chat_id)] = size
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._order) > 1:
            (victim, victim_chat), victim_size = self._order.popitem(last=False)
            self.bytes -= victim_size
            self.evictions += 1
            victim._evicted(victim_chat)

    def release(self, cache: ChatCache, chat_id: int) -> None:
        size = self._order.pop((cache, chat_id), None)
        if size is not None:
            self.bytes -= size


class ChatCache:
    """chat_id -> Context for one bot. `max_entries=0` or `max_bytes=0` disables caching.
    With a `budget`, the worker-wide cap applies too (shared with the other bots)."""

    __slots__ = (
        "_budget",
        "_bytes",
        "_clock",
        "_data",
        "evictions",
        "expirations",
        "max_bytes",
        "max_entries",
        "ttl_s",
    )

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        budget: CacheBudget | None = None,
    ) -> None:
        self._budget = budget
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        # chat_id -> (context, charged bytes, expires at)
        self._data: OrderedDict[int, tuple[Context, int, float]] = OrderedDict()
        self._bytes = 0
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, chat_id: int) -> Context | None:
        entry = self._data.get(chat_id)
        if entry is None:
            return None
        if entry[2] <= self._clock():
            self._drop(chat_id)
            self.expirations += 1
            return None
        self._data.move_to_end(chat_id)
        if self._budget is not None:
            self._budget.touch(self, chat_id)
        return entry[0]

    def put(self, ctx: Context) -> None:
        budget = self._budget
        if self.max_entries <= 0 or self.max_bytes <= 0:
            return
        size = ctx.approx_bytes()
        if size > self.max_bytes or (budget is not None and size > budget.max_bytes):
            self.discard(ctx.chat_id)  # never cache what alone exceeds the budget
            return
        chat_id = ctx.chat_id
        old = self._data.pop(chat_id, None)
        if old is not None:
            self._bytes -= old[1]
        self._data[chat_id] = (ctx, size, self._clock() + self.ttl_s)
        self._bytes += size
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            evicted_chat, (_, evicted_size, _) = self._data.popitem(last=False)
            self._bytes -= evicted_size
            self.evictions += 1
            if budget is not None:
                budget.release(self, evicted_chat)
        if budget is not None:
            budget.charge(self, chat_id, size)

    def discard(self, chat_id: int) -> None:
        if chat_id in self._data:
            self._drop(chat_id)

    def clear(self) -> None:
        if self._budget is not None:
            for chat_id in self._data:
                self._budget.release(self, chat_id)
        self._data.clear()
        self._bytes = 0

    def _drop(self, chat_id: int) -> None:
        _, size, _ = self._data.pop(chat_id)
        self._bytes -= size
        if self._budget is not None:
            self._budget.release(self, chat_id)

    def _evicted(self, chat_id: int) -> None:
        """The worker's budget evicted this chat (it already uncharged it)."""
        entry = self._data.pop(chat_id, None)
        if entry is not None:
            self._bytes -= entry[1]
            self.evictions += 1

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(len(self._data), self._bytes, self.evictions, self.expirations)
