"""A rolling upgrade's phases, the table of the changes allowed between them, and the
status others read (`GET /v1/upgrade`, `botvisor upgrade`, `/readyz`). The state machine
that moves through them is `RollingUpgrade` (supervisor/master/upgrade.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final


class UpgradePhase(StrEnum):
    #: no upgrade since the master started
    IDLE = "idle"
    #: requested while the worker count changes; starts when that is done
    WAITING = "waiting"
    #: the replacement of `worker` boots, owning no shards
    STARTING = "starting"
    #: the old `worker` stops its bots and saves their progress
    HANDING_OVER = "handing_over"
    #: the replacement starts the bots of those shards
    TAKING_OVER = "taking_over"
    #: every worker was replaced
    DONE = "done"
    #: stopped with `error`; the workers not yet replaced run the old code
    FAILED = "failed"


ALLOWED: Final[Mapping[UpgradePhase, frozenset[UpgradePhase]]] = {
    UpgradePhase.IDLE: frozenset({UpgradePhase.WAITING}),
    UpgradePhase.WAITING: frozenset({UpgradePhase.STARTING, UpgradePhase.FAILED}),
    UpgradePhase.STARTING: frozenset({UpgradePhase.HANDING_OVER, UpgradePhase.FAILED}),
    UpgradePhase.HANDING_OVER: frozenset({UpgradePhase.TAKING_OVER, UpgradePhase.FAILED}),
    UpgradePhase.TAKING_OVER: frozenset(
        {UpgradePhase.STARTING, UpgradePhase.DONE, UpgradePhase.FAILED}
    ),
    UpgradePhase.DONE: frozenset({UpgradePhase.WAITING}),
    UpgradePhase.FAILED: frozenset({UpgradePhase.WAITING}),
}
RUNNING: Final = frozenset(
    {
        UpgradePhase.WAITING,
        UpgradePhase.STARTING,
        UpgradePhase.HANDING_OVER,
        UpgradePhase.TAKING_OVER,
    }
)


class IllegalTransition(RuntimeError):
    """A bug: the upgrade tried a phase change its table does not allow."""


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class UpgradeStatus:
    """What `GET /v1/upgrade`, `botvisor upgrade` and `/readyz` read."""

    #: 1 for the first upgrade since the master started, then counting; 0: none yet
    id: int
    phase: UpgradePhase
    #: the worker being replaced now (None when none is)
    worker: int | None
    workers_replaced: int
    workers_total: int
    started: float | None  # wall clock
    finished: float | None
    error: str | None
    requested_by: str | None

    @property
    def running(self) -> bool:
        return self.phase in RUNNING

    def summary(self) -> str:
        """One line for people: the CLI's last line and the readiness reason."""
        match self.phase:
            case UpgradePhase.IDLE:
                return "no upgrade has run"
            case UpgradePhase.WAITING:
                return "upgrade waiting for the worker count change to finish"
            case UpgradePhase.DONE:
                took = (self.finished or 0) - (self.started or 0)
                return f"upgraded {self.workers_replaced} worker(s) in {took:.1f} s"
            case UpgradePhase.FAILED:
                return (
                    f"upgrade failed after {self.workers_replaced} of {self.workers_total} "
                    f"worker(s): {self.error}"
                )
        return (
            f"upgrading: worker {self.worker} {self.phase.replace('_', ' ')} "
            f"({self.workers_replaced} of {self.workers_total} replaced)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "phase": str(self.phase),
            "worker": self.worker,
            "workers_replaced": self.workers_replaced,
            "workers_total": self.workers_total,
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "error": self.error,
            "requested_by": self.requested_by,
            "summary": self.summary(),
        }
