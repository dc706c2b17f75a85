"""Failed logins per source, with growing lockouts: keys cannot be guessed at speed.

One `Lockout` per process and surface: the master's admin API counts by client address,
the manager bot (in the worker that runs it) by Telegram user. A source gets
`free` failures; each failure after that locks it for `base_s` doubled per extra failure,
at most `max_s`. While locked, every attempt is refused, a correct key included, so a
guesser learns nothing. A success does not wipe the count (a holder of one owner key
must not reset its guesses at the admin key); a source that stays quiet for
4 × `max_s` after its last failure is forgotten. At most `max_sources` are remembered (oldest
dropped), so a flood of addresses cannot grow memory without bound.

Runs in one event loop; `now` is injectable so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_SOURCES: Final = 10_000


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float
    locked_until: float


class Lockout:
    def __init__(
        self,
        *,
        free: int = 10,
        base_s: float = 1.0,
        max_s: float = 900.0,
        max_sources: int = DEFAULT_MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = free
        self._base_s = base_s
        self._max_s = max_s
        self._max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, source: str) -> float:
        """Seconds this source must wait before its next attempt is even looked at; 0: go."""
        record = self._current(source)
        return 0.0 if record is None else max(0.0, record.locked_until - self._clock())

    def failed(self, source: str) -> tuple[int, float]:
        """Count one failure; returns (failures so far, seconds now locked)."""
        now = self._clock()
        record = self._current(source) or _Record(0, now, now)
        record.failures += 1
        record.last_failure = now
        extra = record.failures - self._free
        lock = 0.0 if extra <= 0 else min(self._max_s, self._base_s * 2 ** min(extra - 1, 30))
        record.locked_until = now + lock
        self._sources[source] = record
        self._sources.move_to_end(source)
        while len(self._sources) > self._max_sources:
            self._sources.popitem(last=False)
        return record.failures, lock

    def _current(self, source: str) -> _Record | None:
        record = self._sources.get(source)
        if record is not None and self._clock() - record.last_failure > 4 * self._max_s:
            del self._sources[source]
            return None
        return record
