"""The master's records of its workers: one `WorkerSlot` per worker process (its shards,
heartbeat, restarts) and the `Rebalance` in progress when the worker count changes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from ipc.heartbeat import Heartbeat


@dataclass(frozen=True, slots=True)
class Rebalance:
    target: int
    epoch: int
    phase: Literal["shrink", "grow"]
    started: float


@dataclass(slots=True)
class WorkerSlot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    age: int = 0
    spawned_at: float = 0.0
    heartbeat: Heartbeat | None = None
    heartbeat_seen: float = 0.0  # monotonic time the heartbeat last changed
    aborted_at: float | None = None
    respawn_at: float = 0.0
    restarts_in_row: int = 0
    #: restarts of this slot's worker since the master started
    restarts: int = 0
    #: the shards this worker owns, and the assignment epoch they belong to
    shards: list[int] = field(default_factory=list)
    epoch: int = 0
    #: shards it will be given soon (rolling upgrade): its handlers are imported at boot
    warm: list[int] = field(default_factory=list)
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    beats: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None


@dataclass(slots=True)
class Standby:
    """A worker process started ahead of need (`workers.standby`): its imports done, it
    waits for a first pipe line that names the slot it takes over."""

    proc: asyncio.subprocess.Process
    beat_r: int  # the read end of its heartbeat pipe, read once it is adopted


def spare_slot(index: int, epoch: int, warm: list[int]) -> WorkerSlot:
    """A rolling upgrade's replacement: owns nothing yet, imports the handlers of `warm`."""
    return WorkerSlot(index, shards=[], epoch=epoch, warm=warm)
