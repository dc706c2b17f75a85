"""Moving shards between the master's workers so no bot ever has two pollers (no 409s):
a worker-count change in two phases (shrink, then grow), this host's shard leases
(supervisor/master/leases.py calls `set_owned`, `applied` and `send_leases`), and the
one-worker moves of a rolling upgrade (`assign_nowait`).

`ShardMoves` is a base of `Master` (supervisor/master/arbiter.py). Runs in the master's
loop; nothing here blocks: each call advances as far as the heartbeats allow.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Mapping

from ipc import pipe
from supervisor.master.shards import shards_of_worker
from supervisor.master.slots import Rebalance, WorkerSlot
from supervisor.master.worker_processes import WorkerProcesses


class ShardMoves(WorkerProcesses):
    """Worker-count changes, lease hand-offs and upgrade moves; a base of `Master`."""

    # set by Master (supervisor/master/arbiter.py)
    owned: frozenset[int] | None
    desired_workers: int
    rebalance: Rebalance | None
    _epoch: int

    # -- changing the worker count -------------------------------------------------------------

    def manage_rebalance(self) -> None:
        """Move shards in two phases so no bot ever has two pollers (no 409s).

        Shrink: every worker keeps only the shards it keeps under the new map, and
        reports (heartbeat epoch) once the bots it gave up have stopped and confirmed.
        Grow: then each worker, old or new, takes its full new set. Runs in the master;
        never blocks: each call advances the state machine as far as heartbeats allow.
        """
        rb = self.rebalance
        if rb is None:
            if (
                self.desired_workers != len(self.slots)
                and not self.draining
                and not self.upgrade.running  # it waits for the upgrade; the upgrade, for it
            ):
                self._start_rebalance(self.desired_workers)
            return
        if not all(
            s.proc is None or (s.heartbeat and s.heartbeat.epoch >= rb.epoch)
            for s in [*self.slots, *self.retiring]
        ):
            return
        if rb.phase == "shrink":
            self._epoch += 1
            for slot in self.slots[rb.target :]:
                self.retiring.append(slot)
                if slot.pid is not None:
                    os.kill(slot.pid, signal.SIGTERM)
            self.slots = self.slots[: rb.target]
            for i in range(rb.target):
                slot = self.slots[i]
                slot.shards, slot.epoch = self._shards_for(i, rb.target), self._epoch
                self._send(slot, pipe.Assign(shards=tuple(slot.shards), epoch=self._epoch))
            self.rebalance = Rebalance(rb.target, self._epoch, "grow", rb.started)
            return
        self._log.info(
            "master.rebalanced", workers=rb.target, seconds=round(time.monotonic() - rb.started, 3)
        )
        self.rebalance = None

    def _start_rebalance(self, target: int) -> None:
        self._epoch += 1
        self._log.info("master.rebalancing", workers_from=len(self.slots), workers_to=target)
        for slot in self.slots:
            keep = set(self._shards_for(slot.index, target)) if slot.index < target else set()
            slot.shards = [s for s in slot.shards if s in keep]
            slot.epoch = self._epoch
            self._send(slot, pipe.Assign(shards=tuple(slot.shards), epoch=self._epoch))
        # new workers boot now, owning nothing yet, so their start-up overlaps the shrink
        for i in range(len(self.slots), target):
            self.slots.append(WorkerSlot(i, shards=[], epoch=self._epoch))
        self.rebalance = Rebalance(target, self._epoch, "shrink", time.monotonic())

    # -- shard leases (supervisor/master/leases.py drives these) ---------------------------------

    def _shards_for(self, index: int, workers: int) -> list[int]:
        """Worker `index`'s shards: its part of the map, only those this host holds."""
        mine = shards_of_worker(index, workers, self.settings.workers.shards)
        return mine if self.owned is None else [s for s in mine if s in self.owned]

    def set_owned(self, shards: frozenset[int]) -> int:
        """This host now holds `shards`: each worker gets its part (stopping the bots of
        shards it loses, saving their watermarks). Returns the assignment epoch the
        heartbeats report once applied. Runs in the master; never blocks."""
        self.owned = shards
        self._epoch += 1
        for slot in self.slots:
            new = self._shards_for(slot.index, len(self.slots))
            if self.rebalance is not None:
                new = [s for s in slot.shards if s in shards]  # the grow phase adds the rest
            slot.shards, slot.epoch = new, self._epoch
            self._send(slot, pipe.Assign(shards=tuple(new), epoch=self._epoch))
        if self.rebalance is not None:
            self.rebalance = Rebalance(
                self.rebalance.target, self._epoch, self.rebalance.phase, self.rebalance.started
            )
        return self._epoch

    def applied(self, epoch: int) -> bool:
        """Every live worker runs assignment `epoch` (or later): stopped bots saved."""
        return all(
            s.proc is None or (s.heartbeat is not None and s.heartbeat.epoch >= epoch)
            for s in [*self.slots, *self.retiring]
        )

    def send_leases(self, epochs: Mapping[int, int], valid_until: float) -> None:
        """Every worker learns the fencing epochs and until when it may act."""
        deadline = None if math.isinf(valid_until) else valid_until
        self._leases = pipe.Leases(epochs=dict(epochs), valid_until=deadline)
        for slot in self.slots:
            self._send(slot, self._leases)

    def assign_nowait(self, slot: WorkerSlot, shards: list[int]) -> None:
        """Give `slot` a new shard set under a new epoch (rolling upgrade). Runs in the
        master; its heartbeat echoes the epoch once its bots match the set."""
        self._epoch += 1
        slot.shards, slot.epoch = list(shards), self._epoch
        self._send(slot, pipe.Assign(shards=tuple(slot.shards), epoch=self._epoch))
