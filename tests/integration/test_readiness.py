"""Readiness from heartbeats: the master's own view, fed heartbeats directly."""

from __future__ import annotations

import time
from collections.abc import Callable

from config import Settings
from ipc.heartbeat import Heartbeat
from supervisor.master.arbiter import Master


class _Proc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode = None


def _heartbeat(index: int, pid: int, **health: str | int) -> Heartbeat:
    return Heartbeat(
        index=index,
        pid=pid,
        state="ready",
        shards=[index],
        desired=2,
        bots={"running": 2},
        loop_lag_s=0.0,
        at=time.time(),
        epoch=0,
        health=dict(health),
    )


def test_a_degraded_context_layer_makes_the_host_not_ready_with_the_reason(
    settings_factory: Callable[..., Settings],
) -> None:
    master = Master(settings_factory(workers={"count": 2}))
    for slot in master.slots:
        slot.proc = _Proc(1000 + slot.index)  # type: ignore[assignment]
        slot.heartbeat = _heartbeat(slot.index, 1000 + slot.index, redis="ok", postgres="ok")
    assert master.readiness() == (True, "ok")
    master.slots[1].heartbeat = _heartbeat(1, 1001, redis="degraded", postgres="ok")
    ready, reason = master.readiness()
    assert not ready and reason == "worker 1: redis degraded"
    master.slots[1].heartbeat = _heartbeat(1, 1001, redis="ok", postgres="degraded")
    assert master.readiness() == (False, "worker 1: postgres degraded")
