"""Per-bot figures for the dashboard: what each bot did since the previous heartbeat.

Runs in the worker's event loop. `Fleet._fold` already takes and zeroes every actor's
counters once per heartbeat; it hands the non-zero ones here, so the hot path pays
nothing more. `snapshot()` builds the heartbeat's `per_bot` field, bounded; `due()`
says when: every `dashboard.poll_interval_s`, not every beat, since a 5,000-bot snapshot
costs the master a decode and a fold of 5,000 entries (deltas add up meanwhile).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Final

from bots.actor.state import ActorState
from bots.actor.supervise import BotHandle


class BotFigures:
    """Deltas since the last snapshot, and when each bot last received an update."""

    def __init__(self) -> None:
        #: bot id -> [received, sent, 429s, errors] since the last snapshot
        self._deltas: dict[int, list[int]] = {}
        #: bot id -> wall time of the heartbeat that first saw its newest update
        self._last_update: dict[int, float] = {}
        self._snapshot_at = -math.inf  # monotonic time of the last `due()` that said yes

    def due(self, every_s: float, slack_s: float, now: float | None = None) -> bool:
        """True (and the clock restarts) once `every_s` passed since the last True, less
        `slack_s`: heartbeats tick with jitter, and a beat a hair early must not push the
        figures a whole beat later."""
        now = time.monotonic() if now is None else now
        if now - self._snapshot_at < every_s - slack_s:
            return False
        self._snapshot_at = now
        return True

    def record(self, bot_id: int, received: int, sent: int, r429: int, errors: int) -> None:
        """Called by the fold with one bot's counters (only when one of them is non-zero)."""
        d = self._deltas.get(bot_id)
        if d is None:
            self._deltas[bot_id] = [received, sent, r429, errors]
        else:
            d[0] += received
            d[1] += sent
            d[2] += r429
            d[3] += errors
        if received:
            self._last_update[bot_id] = time.time()

    def snapshot(
        self, handles: Mapping[int, BotHandle], limit: int
    ) -> tuple[dict[str, list[Any]], list[int], int]:
        """(`per_bot`, `per_bot_idle`, `per_bot_omitted`) for the heartbeat: bots with
        activity since the last snapshot or not running get an entry, running bots with
        nothing new only their id (most of a large fleet, most of the time). At most
        `limit` bots in all, those with activity first."""
        deltas, self._deltas = self._deltas, {}
        last = self._last_update
        for gone in [b for b in last if b not in handles]:
            del last[gone]
        order = sorted(handles, key=lambda b: b not in deltas) if len(handles) > limit else handles
        busy: dict[str, list[Any]] = {}
        idle: list[int] = []
        running = ActorState.RUNNING
        for bot_id in order:
            if len(busy) + len(idle) >= limit:
                break
            state = handles[bot_id].state
            d = deltas.get(bot_id)
            if d is None and state is running:
                idle.append(bot_id)
            else:
                busy[str(bot_id)] = [str(state), *(d or _NOTHING), last.get(bot_id, 0.0)]
        return busy, idle, len(handles) - len(busy) - len(idle)


_NOTHING: Final = (0, 0, 0, 0)
