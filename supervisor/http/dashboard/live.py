"""Live figures per bot, folded from the workers' heartbeats: state, rates, the last hour.

Runs in the master's event loop: `on_beat` is a `Master.beat_listeners` entry, called
with every heartbeat a worker sends on its pipe (its `per_bot` field). Workers put the
figures in a beat only every `dashboard.poll_interval_s`; a beat without them
(`per_bot_included` False) only says the worker is alive, so its bots stay fresh. Memory is bounded
by the fleet: a small record per bot, and two rings of 60 per-minute counts only for
bots that ever received or sent something. A bot a worker no longer reports is
kept as "stopped" while its last hour still has traffic to chart, then forgotten (a bot
that moved to another worker is reported by that one).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from ipc.heartbeat import Heartbeat

MINUTES: Final = 60
RUNNING: Final = "running"
#: the state of a bot no worker reports any more (stopped, paused, removed)
STOPPED: Final = "stopped"


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
        # keyed by the heartbeat's str ids: folding then converts nothing
        self._bots: dict[str, BotLive] = {}
        self._by_worker: dict[int, set[str]] = {}
        #: monotonic time of each worker's newest beat, with figures or without
        self._beat_seen: dict[int, float] = {}
        self.fleet_received = _Ring.empty(0)
        self.fleet_sent = _Ring.empty(0)
        #: bots the workers' caps left out of their last heartbeats
        self.omitted: dict[int, int] = {}
        #: bots no worker reports any more whose last hour still has traffic
        self._stopped: set[str] = set()
        self._pruned_minute = 0

    def __len__(self) -> int:
        return len(self._bots)

    def on_beat(self, worker: int, hb: Heartbeat) -> None:
        """Fold one heartbeat in. Never blocks; O(bots in the beat), a few µs each (it
        runs in the master's loop once per `dashboard.poll_interval_s` per worker:
        bench/dashboard.py times it). A beat without figures costs one dict write."""
        now = self._clock()
        self._beat_seen[worker] = now
        if not hb.per_bot_included:
            return
        minute = int(self._wall() // 60)
        slot = minute % MINUTES
        bots = self._bots
        fleet_in = fleet_out = 0
        for key, entry in hb.per_bot.items():
            try:
                state, received, sent, r429, errors, last = entry
            except (TypeError, ValueError):
                continue  # a newer worker's shape: skip rather than guess
            live = bots.get(key)
            if live is None:
                if not key.isdigit():
                    continue
                live = bots[key] = BotLive(worker, state, now, last or 0.0)
            else:
                live.worker, live.state, live.seen = worker, state, now
                if last:
                    live.last_update_at = last
            if r429 or errors:
                live.telegram_429 += r429
                live.errors += errors
            ring_in, ring_out = live.received, live.sent
            if ring_in is None or ring_out is None:
                if not (received or sent):
                    continue
                ring_in = live.received = _Ring.empty(minute)
                ring_out = live.sent = _Ring.empty(minute)
            if ring_in.minute == minute and ring_out.minute == minute:  # the usual case
                ring_in.counts[slot] += received
                ring_out.counts[slot] += sent
            else:
                ring_in.add(minute, received)
                ring_out.add(minute, sent)
            fleet_in += received
            fleet_out += sent
        idle = [str(b) for b in hb.per_bot_idle if isinstance(b, int)]
        for key in idle:  # running, nothing new: only seen again
            live = bots.get(key)
            if live is None:
                bots[key] = BotLive(worker, RUNNING, now, 0.0)
            else:
                live.worker, live.state, live.seen = worker, RUNNING, now
        reported = set(hb.per_bot)
        reported.update(idle)
        for gone in self._by_worker.get(worker, set()) - reported:
            if (live := bots.get(gone)) is not None and live.worker == worker:
                if live.received is None:
                    del bots[gone]
                else:  # keep its last hour for the chart (a paused bot)
                    live.state = STOPPED
                    self._stopped.add(gone)
        self._by_worker[worker] = reported
        if minute != self._pruned_minute:
            self._prune(minute)
        self.omitted[worker] = hb.per_bot_omitted
        self.fleet_received.add(minute, fleet_in)
        self.fleet_sent.add(minute, fleet_out)

    def _prune(self, minute: int) -> None:
        """Once a minute: forget stopped bots whose last traffic left the chart."""
        self._pruned_minute = minute
        bots = self._bots
        for key in list(self._stopped):
            live = bots.get(key)
            if live is None or live.state != STOPPED:
                self._stopped.discard(key)  # reported again, or gone
            elif live.received is None or live.received.minute <= minute - MINUTES:
                del bots[key]
                self._stopped.discard(key)

    def bot(self, bot_id: int, *, series: bool = False) -> dict[str, Any]:
        """What a page shows of one bot (JSON-ready); `state` None: no worker reports it."""
        live = self._bots.get(str(bot_id))
        if live is None:
            return {"id": bot_id, "live_state": None}
        now, wall = self._clock(), self._wall()
        seen = max(live.seen, self._beat_seen.get(live.worker, live.seen))
        stale = live.state != STOPPED and now - seen > self.stale_after_s
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
        minute = int(wall // 60)
        now_slot, prev_slot = minute % MINUTES, (minute - 1) % MINUTES
        rest = 1.0 - (wall % 60) / 60
        out: dict[int, tuple[float, float]] = {}
        for key, live in self._bots.items():
            r_in, r_out = live.received, live.sent
            if r_in is None or r_out is None or r_in.minute < minute - 1:
                continue  # no traffic in the last two minutes
            if r_in.minute == minute:
                rate_in = r_in.counts[now_slot] + r_in.counts[prev_slot] * rest
                rate_out = r_out.counts[now_slot] + r_out.counts[prev_slot] * rest
            else:  # nothing yet this minute: the previous one is the newest written
                rate_in = r_in.counts[prev_slot] * rest
                rate_out = r_out.counts[prev_slot] * rest
            out[int(key)] = (rate_in, rate_out)
        return out

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
