"""A sliding-window log: at most `limit` grants in any window of `period` seconds.

Pure and synchronous: every method takes `now`, nothing sleeps, nothing reads a
clock, so it is tested with plain numbers. `BotLimiter` composes one per scope.

Why a log and not a token bucket or GCRA: Telegram (and our emulator) count
arrivals in sliding windows. A bucket that refills continuously lets an idle
client send `limit` at once and then one more per `period / limit`, so a window
right after a burst holds more than `limit` (aiolimiter#298, python-telegram-bot#3772).
The log grants the (n + limit)-th message no earlier than the n-th plus `period`,
which is exactly the sliding-window rule, and still lets an idle bot burst.

The server counts a message when it arrives, somewhere between our grant and its
answer. So a grant may be held (`reserve(hold=True)`) until `settle` records the answer's
time: while held, the grant `limit` places later waits for that answer instead of a
time (a request queued for a pooled connection may take longer than a period).
"""

from __future__ import annotations

import math
from collections import deque

#: The longest an in-flight grant holds its window's next grant back (a request never
#: settled — a bug — costs a pause, not a stuck bot); requests time out well before.
HOLD_MAX_S = 60.0


class Window:
    """The last `limit` grant times of one scope, plus a 429 deadline.

    Grants are non-decreasing, so FIFO order is time order. The log is a ring
    buffer in a list rather than `deque(maxlen=limit)`: an empty deque costs
    760 bytes and a one-element list 64, and a bot may hold a window per chat.
    """

    __slots__ = ("_head", "_held", "_limit", "_period", "_times", "blocked_until")

    def __init__(self, limit: int, period: float) -> None:
        _check(limit, period)
        self._limit = limit
        self._period = period
        # Oldest grant at _head once the ring is full; append order before that.
        self._times: list[float] = []
        self._head = 0
        #: No grant before this time (set from Telegram's retry_after).
        self.blocked_until = -math.inf
        # grant time -> how many of those grants are still in flight (None: none); made
        # lazily, as a bot may hold a window per chat
        self._held: dict[float, int] | None = None

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def period(self) -> float:
        return self._period

    def __len__(self) -> int:
        """Grants remembered (at most `limit`)."""
        return len(self._times)

    def last(self) -> float:
        """The latest grant, or -inf if there was none."""
        if not self._times:
            return -math.inf
        return self._times[self._head - 1]

    def earliest(self, now: float) -> float:
        """The earliest time >= now at which one more grant is allowed."""
        t = max(now, self.blocked_until)
        times = self._times
        if times:
            # The last grant keeps grants monotone even if a caller's `now` lags.
            t = max(t, times[self._head - 1])
            if len(times) == self._limit:
                # The window is full until its oldest grant leaves it.
                oldest = times[self._head]
                if self._held and oldest in self._held:
                    # still in flight: it may arrive at any moment, so the next grant
                    # waits for its answer (settle), at most HOLD_MAX_S past its grant
                    t = max(t, oldest + HOLD_MAX_S)
                else:
                    t = max(t, oldest + self._period)
        return t

    def waits_for_answer(self, now: float) -> bool:
        """True when the next grant waits for an in-flight request's answer (`settle`)
        rather than for a time: the caller sleeps until a settle wakes it."""
        times = self._times
        return bool(
            self._held
            and len(times) == self._limit
            and times[self._head] in self._held
            and self.earliest(now) > now
        )

    def reserve(self, now: float, *, hold: bool = False) -> float:
        """Record one grant at `earliest(now)` and return that time.

        The caller must not act before the returned time; a reserved slot that
        goes unused is wasted, which errs on the safe side. With `hold` the grant
        counts as in flight until `settle`: the grant `limit` places later waits for it.
        """
        t = self.earliest(now)
        if hold:
            held = self._held
            if held is None:
                held = self._held = {}
            held[t] = held.get(t, 0) + 1
        times = self._times
        if len(times) < self._limit:
            times.append(t)
        else:
            times[self._head] = t
            self._head = (self._head + 1) % self._limit
        return t

    def settle(self, granted: float, done: float) -> None:
        """Move a grant to the time its request finished.

        The server counts a message when it arrives, which is somewhere between our
        grant and the answer. Recording the answer's time is the conservative bound,
        so a request delayed on its way (a busy loop, a slow socket) can never make
        a later, faster one land inside its window. Safe out of order: a slot is only
        reused once its (settled) time has left the window.
        """
        held = self._held
        if held and granted in held:
            if held[granted] > 1:
                held[granted] -= 1
            else:
                del held[granted]
            if not held:
                self._held = None
        times = self._times
        n = len(times)
        for back in range(1, n + 1):  # newest first: the grant is almost always recent
            i = (self._head - back) % n
            if times[i] == granted:
                if done > granted:
                    times[i] = done
                return

    def block_until(self, t: float) -> None:
        """No grant before `t` (a 429). Only ever extends the deadline."""
        self.blocked_until = max(self.blocked_until, t)

    def idle(self, now: float) -> bool:
        """True when this window constrains nothing any more, so it can be dropped."""
        if self._held:
            return False  # a request in flight still counts
        newest = max(self._times, default=-math.inf)  # settled grants may be out of order
        return newest + self._period <= now and self.blocked_until <= now

    def retune(self, limit: int, period: float) -> None:
        """Change the rate in place; the new rule also counts what was already sent.

        Lowering the limit keeps the newest `limit` grants. Raising it needs
        grants older than the log remembers; the old rule bounds them (the one
        `old limit` places before a known grant was at least `old period`
        earlier), so those bounds stand in for them: never late, at worst early.
        """
        _check(limit, period)
        ordered = self._times[self._head :] + self._times[: self._head]
        if len(ordered) == self._limit < limit:
            older = deque(ordered)
            while len(older) < limit:
                # Rounded up so the bound is never below the true grant time.
                older.appendleft(math.nextafter(older[self._limit - 1] - self._period, math.inf))
            ordered = list(older)
        self._times = ordered[-limit:]
        self._head = 0
        self._limit = limit
        self._period = period

    def __repr__(self) -> str:
        return (
            f"Window(limit={self._limit}, period={self._period}, "
            f"grants={len(self._times)}, blocked_until={self.blocked_until})"
        )


def _check(limit: int, period: float) -> None:
    if limit < 1:
        raise ValueError(
            f"rate limit must be >= 1 message, got {limit}; use a longer period instead"
        )
    if not period > 0 or math.isinf(period):
        raise ValueError(f"rate period must be a positive number of seconds, got {period}")
