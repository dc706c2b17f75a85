"""A circuit breaker per upstream: pure, with `now` passed in (tests need no clock).

closed --(N consecutive failures)--> open --(cooldown passed)--> half-open
half-open lets one probe through: success -> closed, failure -> open (cooldown again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class BreakerState(StrEnum):
    #: Calls flow; consecutive failures are counted.
    CLOSED = "closed"
    #: Calls are refused until the cooldown has passed.
    OPEN = "open"
    #: One probe call is let through to test the upstream.
    HALF_OPEN = "half_open"


_ALLOWED: Final[Mapping[BreakerState, frozenset[BreakerState]]] = {
    BreakerState.CLOSED: frozenset({BreakerState.OPEN}),
    BreakerState.OPEN: frozenset({BreakerState.HALF_OPEN}),
    BreakerState.HALF_OPEN: frozenset({BreakerState.CLOSED, BreakerState.OPEN}),
}


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if not self.cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be >= 0 seconds, got {self.cooldown_s}")


class CircuitBreaker:
    __slots__ = ("_failures", "_opened_at", "_probing", "config", "opened", "state")

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.opened = 0  # times it opened (statistics)

    def allow(self, now: float) -> bool:
        """May a call go out now? In half-open, only one (the probe) until it reports."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self.config.cooldown_s:
                return False
            self._set(BreakerState.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def record_success(self, now: float) -> None:
        self._failures = 0
        self._probing = False
        if self.state is BreakerState.HALF_OPEN:
            self._set(BreakerState.CLOSED)

    def record_failure(self, now: float) -> None:
        self._probing = False
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        if self.state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open(now)

    def abandon(self) -> None:
        """The allowed call ended without a verdict (cancelled): let another probe through."""
        self._probing = False

    def retry_in(self, now: float) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.config.cooldown_s - (now - self._opened_at))

    def _open(self, now: float) -> None:
        self._set(BreakerState.OPEN)
        self._opened_at = now
        self._failures = 0
        self.opened += 1

    def _set(self, new: BreakerState) -> None:
        if new not in _ALLOWED[self.state]:
            raise AssertionError(f"breaker: {self.state} -> {new}")
        self.state = new
