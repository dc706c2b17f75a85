"""A bot's in-memory cache of chat contexts: LRU bounded by entries and bytes, with a TTL.

Runs in the worker's event loop; no awaits, so no locking. A hit is a dict lookup,
a clock read and a move to the end.
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


class ChatCache:
    """chat_id -> Context for one bot. `max_entries=0` or `max_bytes=0` disables caching."""

    __slots__ = (
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
    ) -> None:
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
        return entry[0]

    def put(self, ctx: Context) -> None:
        if self.max_entries <= 0 or self.max_bytes <= 0:
            return
        size = ctx.approx_bytes()
        if size > self.max_bytes:
            self.discard(ctx.chat_id)  # never cache what alone exceeds the budget
            return
        chat_id = ctx.chat_id
        old = self._data.pop(chat_id, None)
        if old is not None:
            self._bytes -= old[1]
        self._data[chat_id] = (ctx, size, self._clock() + self.ttl_s)
        self._bytes += size
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, evicted_size, _) = self._data.popitem(last=False)
            self._bytes -= evicted_size
            self.evictions += 1

    def discard(self, chat_id: int) -> None:
        if chat_id in self._data:
            self._drop(chat_id)

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    def _drop(self, chat_id: int) -> None:
        _, size, _ = self._data.pop(chat_id)
        self._bytes -= size

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(len(self._data), self._bytes, self.evictions, self.expirations)
