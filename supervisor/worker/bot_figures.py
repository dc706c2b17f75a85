"""Per-bot figures for the dashboard: what each bot did since the previous heartbeat.

Runs in the worker's event loop. `Fleet._fold` already takes and zeroes every actor's
counters once per heartbeat; it hands the non-zero ones here, so the hot path pays
nothing more. `snapshot()` builds the heartbeat's `per_bot` field, bounded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bots.actor.supervise import BotHandle


class BotFigures:
    """Deltas since the last snapshot, and when each bot last received an update."""

    def __init__(self) -> None:
        #: bot id -> [received, sent, 429s, errors] since the last snapshot
        self._deltas: dict[int, list[int]] = {}
        #: bot id -> wall time of the heartbeat that first saw its newest update
        self._last_update: dict[int, float] = {}

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
    ) -> tuple[dict[str, list[Any]], int]:
        """`per_bot` for the heartbeat and how many bots the cap left out. Bots with
        activity come first, so a cut drops idle bots (their state only)."""
        deltas, self._deltas = self._deltas, {}
        last = self._last_update
        for gone in [b for b in last if b not in handles]:
            del last[gone]
        order = sorted(handles, key=lambda b: b not in deltas) if len(handles) > limit else handles
        out: dict[str, list[Any]] = {}
        for bot_id in order:
            if len(out) >= limit:
                break
            d = deltas.get(bot_id) or (0, 0, 0, 0)
            out[str(bot_id)] = [str(handles[bot_id].state), *d, last.get(bot_id, 0.0)]
        return out, len(handles) - len(out)
