"""Rolling code upgrade: replace the workers one at a time with fresh interpreters.

Runs in the master; never blocks. SIGUSR2, `botvisor upgrade` (an `Upgrade` control
message) and `POST /v1/upgrade` all call `RollingUpgrade.request`; the master's loop
calls `advance()` once a turn, which moves the state machine as far as heartbeats allow.

Per worker, oldest index first:

* STARTING: a replacement boots owning no shards (imports the handler code anew, opens
  its pools) while the old worker serves on. If it exits or is not ready within
  `workers.boot_timeout_s`, the upgrade fails and the old worker keeps serving.
* HANDING_OVER: the old worker is assigned no shards. It stops their bots, which
  confirm their offsets and save their progress, and echoes the new epoch in its
  heartbeat: only then are the shards free.
* TAKING_OVER: the replacement takes the old worker's place and is assigned its
  shards; the old one is retired (SIGTERM, nothing left to drain). Once the new worker
  echoes the epoch and runs its bots, the next worker starts.

This is the two-phase move of a worker-count change (shard_moves.manage_rebalance),
one worker at a time, so no bot ever has two pollers and nothing is lost. The phases
and the status others read are in upgrade_status.py, what the upgrade needs of the master
in upgrade_host.py.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Final, Generic

import structlog

from supervisor.exitcodes import ExitCode
from supervisor.master.upgrade_host import S, SlotFactory, UpgradeHost
from supervisor.master.upgrade_status import (
    ALLOWED,
    RUNNING,
    IllegalTransition,
    UpgradePhase,
    UpgradeStatus,
)

log = structlog.get_logger(__name__)

#: the phases in which the replacement exists but is not yet one of the master's slots
_SPARE_PHASES: Final = frozenset({UpgradePhase.STARTING, UpgradePhase.HANDING_OVER})


class RollingUpgrade(Generic[S]):
    """The upgrade state machine; one per master. `_set_phase` is the only writer."""

    def __init__(self, host: UpgradeHost[S], make_slot: SlotFactory[S]) -> None:
        self._host = host
        self._make_slot = make_slot
        self._phase = UpgradePhase.IDLE
        self._id = 0
        self._index = 0  # position in host.slots of the worker being replaced
        self._replaced = 0
        self._total = 0
        self._started: float | None = None
        self._finished: float | None = None
        self._error: str | None = None
        self._by: str | None = None
        self._since = 0.0  # monotonic start of the current phase
        self._shards: list[int] = []  # the shards moving from old to new
        #: the replacement, from its spawn until it owns the old worker's place
        self._spare: S | None = None
        self._old: S | None = None
        self._log = log.bind(role="master")

    # -- what others read ---------------------------------------------------------------

    def status(self) -> UpgradeStatus:
        return UpgradeStatus(
            id=self._id,
            phase=self._phase,
            worker=self._worker(),
            workers_replaced=self._replaced,
            workers_total=self._total,
            started=self._started,
            finished=self._finished,
            error=self._error,
            requested_by=self._by,
        )

    @property
    def running(self) -> bool:
        return self._phase in RUNNING

    def moving_worker(self) -> int | None:
        """The worker index whose bots are between two processes now: readiness does not
        count its short gap against the host."""
        if self._phase in (UpgradePhase.HANDING_OVER, UpgradePhase.TAKING_OVER):
            return self._worker()
        return None

    def spares(self) -> list[S]:
        """The replacement while it boots: not yet in `host.slots`, but drained with them."""
        return [self._spare] if self._spare is not None and self._phase in _SPARE_PHASES else []

    def _worker(self) -> int | None:
        if self._phase in (
            UpgradePhase.STARTING,
            UpgradePhase.HANDING_OVER,
            UpgradePhase.TAKING_OVER,
        ):
            return self._index
        return None

    # -- commands -----------------------------------------------------------------------

    def request(self, by: str) -> tuple[bool, UpgradeStatus]:
        """Start an upgrade unless one runs. Returns (accepted, status); the same method
        for SIGUSR2, the control message and the API."""
        if self.running or self._host.draining:
            self._log.info("upgrade.refused", requested_by=by, running=self.status().summary())
            return False, self.status()
        self._id += 1
        self._index, self._replaced, self._total = 0, 0, len(self._host.slots)
        self._started, self._finished, self._error, self._by = time.time(), None, None, by
        self._set_phase(UpgradePhase.WAITING, f"requested by {by}")
        return True, self.status()

    def abort(self, reason: str) -> None:
        """Runs in the master (drain): stop where we are; a booting spare is stopped.
        Not an error: the operator asked for the stop."""
        if self.running:
            self._fail(reason, error=False)

    def reap(self, pid: int, returncode: int) -> bool:
        """A child exited: True if it was our spare before it took over (the upgrade
        fails, the old worker keeps or gets back its shards)."""
        spare = self._spare
        if (
            spare is None
            or self._phase not in _SPARE_PHASES
            or spare.proc is None
            or spare.proc.pid != pid
        ):
            return False
        spare.proc = None
        self._spare = None
        why = (
            "it could not import the handler code of its shards (worker.handlers_broken "
            "in the log names each and why)"
            if returncode == ExitCode.HANDLERS_BROKEN
            else "see its log lines"
        )
        self._fail(
            f"the replacement of worker {self._index} exited with status {returncode} before "
            f"it took over ({why}); worker {self._index} keeps serving"
        )
        return True

    # -- the machine ----------------------------------------------------------------------

    async def advance(self, now: float) -> None:
        """Runs in the master's loop turn, before dead workers are respawned."""
        match self._phase:
            case UpgradePhase.WAITING if self._host.rebalance is None:
                self._total = len(self._host.slots)
                await self._start_next(now)
            case UpgradePhase.STARTING:
                self._check_spare(now)
            case UpgradePhase.HANDING_OVER:
                self._check_handed_over(now)
            case UpgradePhase.TAKING_OVER:
                await self._check_taken_over(now)

    async def _start_next(self, now: float) -> None:
        old = self._host.slots[self._index]
        spare = self._make_slot(old.index, old.epoch, list(old.shards))
        self._spare, self._old = spare, None
        self._set_phase(UpgradePhase.STARTING, f"replacing worker {old.index}", now)
        try:
            await self._host.spawn_worker(spare)
        except OSError as exc:  # out of processes or file descriptors: nothing was started
            self._spare = None
            self._fail(
                f"could not start a replacement of worker {old.index}: {exc.strerror or exc}; "
                f"worker {old.index} keeps serving"
            )

    def _check_spare(self, now: float) -> None:
        spare = self._spare
        assert spare is not None
        hb = spare.heartbeat
        if hb is not None and hb.state == "ready" and hb.epoch >= spare.epoch:
            old = self._old = self._host.slots[self._index]
            self._shards = list(old.shards)
            self._host.assign_nowait(old, [])
            self._set_phase(UpgradePhase.HANDING_OVER, f"{len(self._shards)} shard(s)", now)
            return
        timeout = self._host.settings.workers.boot_timeout_s
        if now - self._since > timeout:
            self._fail(
                f"the replacement of worker {self._index} was not ready within "
                f"workers.boot_timeout_s ({timeout:g} s); worker {self._index} keeps serving"
            )

    def _check_handed_over(self, now: float) -> None:
        old, spare = self._old, self._spare
        assert old is not None and spare is not None
        hb = old.heartbeat
        # a worker that died meanwhile runs no bots either: its shards are free too
        if old.proc is not None and (hb is None or hb.epoch < old.epoch):
            return
        if spare.pid is None:  # exited, not yet reaped
            self._fail(f"the replacement of worker {self._index} exited during the handover")
            return
        self._host.slots[self._index] = spare
        self._retire(old)
        self._host.assign_nowait(spare, self._shards)
        self._set_phase(UpgradePhase.TAKING_OVER, f"{len(self._shards)} shard(s)", now)

    async def _check_taken_over(self, now: float) -> None:
        spare = self._spare
        assert spare is not None
        slot = self._host.slots[self._index]
        if slot is not spare or slot.proc is None:
            # the restart policy owns it now; the rest of the fleet stays on its code
            self._fail(
                f"the replacement of worker {self._index} died while taking over its shards; "
                "it is restarted as usual"
            )
            return
        hb = slot.heartbeat
        if hb is None or hb.epoch < slot.epoch or hb.state != "ready":
            return
        # bots still starting (getMe in backoff) do not hold up the rest for long
        settled = now - self._since > self._host.settings.workers.boot_timeout_s
        if hb.running < hb.desired and not settled:
            return
        self._replaced += 1
        self._log.info(
            "upgrade.worker_replaced",
            worker=slot.index,
            pid=slot.pid,
            bots=hb.running,
            replaced=self._replaced,
            total=self._total,
        )
        self._spare = self._old = None
        if self._index + 1 < min(self._total, len(self._host.slots)):
            self._index += 1
            await self._start_next(now)
            return
        self._finished = time.time()
        self._set_phase(UpgradePhase.DONE, f"{self._replaced} worker(s)", now)

    # -- helpers --------------------------------------------------------------------------

    def _retire(self, slot: S) -> None:
        """SIGTERM `slot` (its bots are gone or were never there); reaped as retired."""
        if slot.pid is None or slot.proc is None:
            return  # exited already: reaped (or about to be) like any dead worker
        self._host.retiring.append(slot)
        with contextlib.suppress(ProcessLookupError):
            slot.proc.send_signal(signal.SIGTERM)

    def _fail(self, reason: str, *, error: bool = True) -> None:
        spare, old = self._spare, self._old
        if old is not None and self._phase is UpgradePhase.HANDING_OVER:
            self._host.assign_nowait(old, self._shards)  # the old worker serves them again
        if spare is not None and self._phase in _SPARE_PHASES:
            self._retire(spare)  # owns no shards
        self._spare = self._old = None
        self._error, self._finished = reason, time.time()
        self._set_phase(UpgradePhase.FAILED, reason, loud=error)

    def _set_phase(
        self, new: UpgradePhase, reason: str, now: float | None = None, *, loud: bool = False
    ) -> None:
        old = self._phase
        if new not in ALLOWED[old]:
            raise IllegalTransition(f"upgrade phase {old} -> {new}")
        self._phase = new
        self._since = time.monotonic() if now is None else now
        write = self._log.error if loud else self._log.info
        write(
            "upgrade.failed" if new is UpgradePhase.FAILED else "upgrade.phase",
            upgrade=self._id,
            old=str(old),
            new=str(new),
            reason=reason,
            worker=self._worker(),
            replaced=self._replaced,
            total=self._total,
        )
