"""Rate-limited warnings: the first of a kind is logged, repeats within the interval are
counted and the count rides on the next line of that kind.

Ten thousand bots hitting the same fault at once must make a handful of lines, not ten
thousand: warnings are how scale bugs first show, so they have to stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Throttle:
    """Runs in one event loop (one per process or worker). `clock` is injectable for tests."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: suppress this one (counted). Else the number suppressed since the last."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def warning(self, logger: Any, event: str, **fields: Any) -> None:
        """`logger.warning(event, **fields)` unless one went out within the interval; a
        suppressed one is still logged at DEBUG, so nothing is invisible."""
        suppressed = self.allow(event)
        if suppressed is None:
            logger.debug(event, **fields)
            return
        if suppressed:
            fields["suppressed_since_last"] = suppressed
        logger.warning(event, **fields)


#: One per process: every worker's actors share it.
THROTTLE = Throttle()

__all__ = ["THROTTLE", "Throttle"]
