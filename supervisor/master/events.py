"""What reaches the master's event queue (signals, worker exits, control messages) and
`HaltMaster`, which stops it. Signal handlers and child watchers only put these on the
queue; `Master.run()` (supervisor/master/arbiter.py) dispatches them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipc.messages import Drain, Reload


class HaltMaster(BaseException):
    """Stop the master with `exit_status`; a BaseException so no `except Exception` eats it."""

    def __init__(self, reason: str, exit_status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


@dataclass(frozen=True, slots=True)
class WorkerExited:
    index: int
    pid: int
    returncode: int


@dataclass(frozen=True, slots=True)
class SignalReceived:
    signum: int


Event = WorkerExited | SignalReceived | Reload | Drain
