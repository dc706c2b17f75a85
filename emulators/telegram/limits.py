"""sendMessage flood limits: `Limit`, `RateLimits`, and the O(1) windows that apply them.

`Burst` measures what got through: the peak number of sends in any 1-second window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` messages in any `period`-second sliding window."""

    count: int
    period: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.period <= 0:
            raise ValueError(f"bad limit {self.count}/{self.period}: need count>=1, period>0")

    @classmethod
    def parse(cls, text: str) -> Limit:
        """`"30/1"` -> Limit(30, 1.0)."""
        count, _, period = text.partition("/")
        try:
            return cls(int(count), float(period or "1"))
        except ValueError:
            raise ValueError(f"bad limit {text!r}: expected COUNT/SECONDS, e.g. 30/1") from None

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}"


LimitSpec = Limit | tuple[int, float] | str | None


def as_limit(spec: LimitSpec) -> Limit | None:
    if spec is None or isinstance(spec, Limit):
        return spec
    if isinstance(spec, str):
        return Limit.parse(spec)
    return Limit(int(spec[0]), float(spec[1]))


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Telegram's sendMessage flood limits; `None` disables one."""

    per_bot: Limit | None = Limit(30, 1.0)
    per_chat: Limit | None = Limit(1, 1.0)
    per_group: Limit | None = Limit(20, 60.0)

    @classmethod
    def off(cls) -> RateLimits:
        return cls(None, None, None)

    @classmethod
    def of(
        cls,
        per_bot: LimitSpec = Limit(30, 1.0),
        per_chat: LimitSpec = Limit(1, 1.0),
        per_group: LimitSpec = Limit(20, 60.0),
        *,
        enabled: bool = True,
    ) -> RateLimits:
        if not enabled:
            return cls.off()
        return cls(as_limit(per_bot), as_limit(per_chat), as_limit(per_group))

    def as_dict(self) -> dict[str, str | None]:
        return {
            "per_bot": None if self.per_bot is None else str(self.per_bot),
            "per_chat": None if self.per_chat is None else str(self.per_chat),
            "per_group": None if self.per_group is None else str(self.per_group),
        }


class Window:
    """Sliding window as a ring of the last `count` accepted times: O(1) check and record.

    A message at `now` is allowed iff the count-th most recent accepted message
    is at least `period` seconds old.
    """

    __slots__ = ("_idx", "_period", "_ring")

    def __init__(self, limit: Limit) -> None:
        self._ring = [-math.inf] * limit.count
        self._idx = 0
        self._period = limit.period

    def wait(self, now: float) -> float:
        """Seconds until one more message fits (<= 0: fits now)."""
        return self._ring[self._idx] + self._period - now

    def record(self, now: float) -> None:
        ring = self._ring
        ring[self._idx] = now
        self._idx = (self._idx + 1) % len(ring)


class Burst:
    """Peak number of events in any 1-second window (list + head index, amortised O(1))."""

    __slots__ = ("_head", "_times", "peak")

    def __init__(self) -> None:
        self._times: list[float] = []
        self._head = 0
        self.peak = 0

    def add(self, now: float) -> None:
        times = self._times
        times.append(now)
        cutoff = now - 1.0
        head = self._head
        while times[head] <= cutoff:
            head += 1
        n = len(times) - head
        if head > 64 and head > n:
            del times[:head]
            head = 0
        self._head = head
        if n > self.peak:
            self.peak = n

    def reset(self) -> None:
        self._times.clear()
        self._head = 0
        self.peak = 0
