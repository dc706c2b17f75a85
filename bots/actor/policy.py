"""Restart policy as small pure objects; `now` is passed in so tests never sleep."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    """Exponential backoff with jitter (the shape of aiogram's BackoffConfig)."""

    min_delay: float = 0.5
    max_delay: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.min_delay <= self.max_delay:
            raise ValueError("backoff needs 0 < min_delay <= max_delay")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("backoff needs factor >= 1 and 0 <= jitter < 1")


@dataclass(slots=True)
class Backoff:
    config: BackoffConfig
    attempt: int = 0

    def next_delay(self, rand: float | None = None) -> float:
        """The delay before the next attempt; grows with each failure, capped."""
        cfg = self.config
        base = min(cfg.min_delay * cfg.factor**self.attempt, cfg.max_delay)
        self.attempt += 1
        r = random.random() if rand is None else rand  # noqa: S311 - jitter, not crypto
        return base * (1 + cfg.jitter * (2 * r - 1))

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class RestartIntensity:
    """OTP-style: at most `max_restarts` within `within_s`; past it, give up loudly."""

    max_restarts: int = 5
    within_s: float = 60.0
    _times: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> bool:
        """Record a restart at `now`; False when the intensity is exceeded."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.within_s:
            self._times.popleft()
        return len(self._times) <= self.max_restarts
