"""Live figures per bot, folded from the workers' heartbeats: state, rates, the last hour.

Runs in the master's event loop: `on_beat` is a `Master.beat_listeners` entry, called
with every heartbeat a worker sends on its pipe (its `per_bot` field). Memory is bounded
by the fleet: a small record per bot, and two rings of 60 per-minute counts only for
bots that ever received or sent something. A bot a worker no longer reports is
forgotten (stopped, or moved to another worker, which then reports it).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from ipc.heartbeat import Heartbeat

MINUTES: Final = 60


@dataclass(slots=True)
class _Ring:
    """Counts per wall-clock minute for the last hour."""

    counts: array  # type: ignore[type-arg]
    minute: int  # the newest minute written

    @classmethod
    def empty(cls, minute: int) -> _Ring:
        return cls(array("L", bytes(8 * MINUTES)), minute)

    def add(self, minute: int, n: int) -> None:
        if minute > self.minute:
            for m in range(max(self.minute + 1, minute - MINUTES + 1), minute + 1):
                self.counts[m % MINUTES] = 0
            self.minute = minute
        if minute > self.minute - MINUTES:
            self.counts[minute % MINUTES] += n

    def at(self, minute: int) -> int:
        if minute > self.minute or minute <= self.minute - MINUTES:
            return 0
        return int(self.counts[minute % MINUTES])

    def series(self, minute: int) -> list[int]:
        """The last hour, oldest minute first, the current (partial) minute last."""
        return [self.at(m) for m in range(minute - MINUTES + 1, minute + 1)]

    def per_minute(self, now: float) -> float:
        """A rate over the last 60 s: this minute plus the part of the previous one."""
        minute = int(now // 60)
        rest = 1.0 - (now % 60) / 60
        return self.at(minute) + self.at(minute - 1) * rest


@dataclass(slots=True)
class BotLive:
    worker: int
    #: the actor's state in its worker: running, starting, backoff, stopping, …
    state: str
    seen: float  # monotonic time of the heartbeat that reported it
    last_update_at: float  # wall time of its newest update, 0: none yet
    telegram_429: int = 0  # since the master started
    errors: int = 0
    received: _Ring | None = None
    sent: _Ring | None = None


class LiveFigures:
    def __init__(
        self,
        stale_after_s: float,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after_s = stale_after_s
        self._wall = wall
        self._clock = clock
        self._bots: dict[int, BotLive] = {}
        self._by_worker: dict[int, set[int]] = {}
        self.fleet_received = _Ring.empty(0)
        self.fleet_sent = _Ring.empty(0)
        #: bots the workers' caps left out of their last heartbeats
        self.omitted: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._bots)

    def on_beat(self, worker: int, hb: Heartbeat) -> None:
        """Fold one heartbeat in. Never blocks; O(bots in the beat)."""
        now, minute = self._clock(), int(self._wall() // 60)
        bots = self._bots
        reported: set[int] = set()
        fleet_in = fleet_out = 0
        for key, entry in hb.per_bot.items():
            try:
                bot_id = int(key)
                state, received, sent, r429, errors, last = entry
            except (TypeError, ValueError):
                continue  # a newer worker's shape: skip rather than guess
            reported.add(bot_id)
            live = bots.get(bot_id)
            if live is None:
                live = bots[bot_id] = BotLive(worker, str(state), now, float(last or 0))
            else:
                live.worker, live.state, live.seen = worker, str(state), now
                if last:
                    live.last_update_at = float(last)
            if r429 or errors:
                live.telegram_429 += int(r429)
                live.errors += int(errors)
            if received or sent or live.received is not None:
                if live.received is None or live.sent is None:
                    live.received, live.sent = _Ring.empty(minute), _Ring.empty(minute)
                live.received.add(minute, int(received))
                live.sent.add(minute, int(sent))
                fleet_in += int(received)
                fleet_out += int(sent)
        for gone in self._by_worker.get(worker, set()) - reported:
            if (live := bots.get(gone)) is not None and live.worker == worker:
                del bots[gone]
        self._by_worker[worker] = reported
        self.omitted[worker] = hb.per_bot_omitted
        self.fleet_received.add(minute, fleet_in)
        self.fleet_sent.add(minute, fleet_out)

    def forget_worker(self, worker: int) -> None:
        """A worker slot went away (fewer workers): its bots' figures go with it."""
        for bot_id in self._by_worker.pop(worker, set()):
            if (live := self._bots.get(bot_id)) is not None and live.worker == worker:
                del self._bots[bot_id]

    def bot(self, bot_id: int, *, series: bool = False) -> dict[str, Any]:
        """What a page shows of one bot (JSON-ready); `state` None: no worker reports it."""
        live = self._bots.get(bot_id)
        if live is None:
            return {"id": bot_id, "live_state": None}
        now, wall = self._clock(), self._wall()
        stale = now - live.seen > self.stale_after_s
        out: dict[str, Any] = {
            "id": bot_id,
            "live_state": "no heartbeat" if stale else live.state,
            "worker": live.worker,
            "in_per_min": round(live.received.per_minute(wall), 1) if live.received else 0.0,
            "out_per_min": round(live.sent.per_minute(wall), 1) if live.sent else 0.0,
            "telegram_429": live.telegram_429,
            "errors": live.errors,
            "last_update_at": live.last_update_at or None,
        }
        if series:
            minute = int(wall // 60)
            zeros = [0] * MINUTES
            out["in_series"] = live.received.series(minute) if live.received else zeros
            out["out_series"] = live.sent.series(minute) if live.sent else zeros
        return out

    def bots(self, bot_ids: Iterable[int], *, series: bool = False) -> list[dict[str, Any]]:
        return [self.bot(b, series=series) for b in bot_ids]

    def per_minute_by_bot(self) -> dict[int, tuple[float, float]]:
        """(in, out) per minute of every bot with traffic (per-owner totals)."""
        wall = self._wall()
        return {
            b: (live.received.per_minute(wall), live.sent.per_minute(wall))
            for b, live in self._bots.items()
            if live.received is not None and live.sent is not None
        }

    def fleet(self) -> dict[str, Any]:
        wall = self._wall()
        minute = int(wall // 60)
        return {
            "in_per_min": round(self.fleet_received.per_minute(wall), 1),
            "out_per_min": round(self.fleet_sent.per_minute(wall), 1),
            "in_series": self.fleet_received.series(minute),
            "out_series": self.fleet_sent.series(minute),
            "bots_reported": len(self._bots),
            "bots_omitted": sum(self.omitted.values()),
        }
