"""The rolling upgrade's state machine (supervisor/master/upgrade.py), driven through its
inputs: requests, heartbeats, exits and the clock. The host is a stand-in for the master
that records what it was told to do; no process is started."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from config import Settings
from ipc.heartbeat import Heartbeat
from supervisor.exitcodes import ExitCode
from supervisor.master.arbiter import Master
from supervisor.master.shards import shards_of_worker
from supervisor.master.slots import Rebalance, WorkerSlot
from supervisor.master.upgrade import RollingUpgrade
from supervisor.master.upgrade_status import ALLOWED, UpgradePhase

P = UpgradePhase


class FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.signals: list[int] = []
        self.stdin = None  # the master's pipe writes go nowhere

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


class Host:
    """What RollingUpgrade needs of the master; `assigned` records (pid, shards, epoch)."""

    def __init__(self, settings: Settings, workers: int = 2) -> None:
        self.settings = settings
        self.rebalance: Rebalance | None = None
        self.draining = False
        total = settings.workers.shards
        self.slots = [
            WorkerSlot(i, proc=FakeProc(100 + i), shards=shards_of_worker(i, workers, total))  # type: ignore[arg-type]
            for i in range(workers)
        ]
        self.retiring: list[WorkerSlot] = []
        self.assigned: list[tuple[int, tuple[int, ...], int]] = []
        self.epoch = 0
        self._pid = 1000

    async def spawn_worker(self, slot: WorkerSlot) -> None:
        self._pid += 1
        slot.proc = FakeProc(self._pid)  # type: ignore[assignment]

    def assign_nowait(self, slot: WorkerSlot, shards: list[int]) -> None:
        self.epoch += 1
        slot.shards, slot.epoch = list(shards), self.epoch
        assert slot.proc is not None
        self.assigned.append((slot.proc.pid, tuple(shards), self.epoch))


def beat(slot: WorkerSlot, *, state: str = "ready", running: int | None = None) -> None:
    """The worker reports that its bots match its assignment (epoch echoed)."""
    assert slot.proc is not None
    n = len(slot.shards)
    slot.heartbeat = Heartbeat(
        index=slot.index,
        pid=slot.proc.pid,
        state=state,
        shards=list(slot.shards),
        desired=n,
        bots={"running": n if running is None else running},
        epoch=slot.epoch,
    )


def die(slot: WorkerSlot, returncode: int = 1) -> int:
    assert isinstance(slot.proc, FakeProc)
    slot.proc.returncode = returncode
    return slot.proc.pid


def spare_slot(index: int, epoch: int, warm: list[int]) -> WorkerSlot:
    return WorkerSlot(index, shards=[], epoch=epoch, warm=warm)


@pytest.fixture
def host(settings_factory: Callable[..., Settings]) -> Host:
    return Host(settings_factory(workers={"count": 2, "boot_timeout_s": 10.0}))


async def test_workers_are_replaced_one_at_a_time_and_shards_move_only_once_let_go(
    host: Host,
) -> None:
    up = RollingUpgrade(host, spare_slot)
    olds = list(host.slots)
    shards = [list(s.shards) for s in olds]
    accepted, status = up.request("test")
    assert accepted and status.phase is P.WAITING and status.id == 1
    now = 0.0
    for i in range(2):
        await up.advance(now)
        assert up.status().phase is P.STARTING and up.status().worker == i
        [spare] = up.spares()
        assert spare.shards == [] and host.slots[i] is olds[i]
        await up.advance(now)  # no heartbeat yet: nothing moves
        assert up.status().phase is P.STARTING and len(host.assigned) == 2 * i
        beat(spare)
        await up.advance(now)
        # the old worker is told to let go; the new one has nothing yet
        assert up.status().phase is P.HANDING_OVER and up.moving_worker() == i
        assert host.assigned[-1][:2] == (olds[i].pid, ())
        await up.advance(now)  # the old one has not confirmed: the shards stay unowned
        assert up.status().phase is P.HANDING_OVER and spare.shards == []
        beat(olds[i])
        await up.advance(now)
        assert up.status().phase is P.TAKING_OVER
        assert host.slots[i] is spare and olds[i] in host.retiring
        old_proc = olds[i].proc
        assert isinstance(old_proc, FakeProc) and old_proc.signals == [signal.SIGTERM]
        assert host.assigned[-1][:2] == (spare.pid, tuple(shards[i]))
        beat(spare, running=0)  # epoch echoed, bots still starting: wait for them
        await up.advance(now)
        assert up.status().phase is P.TAKING_OVER and up.status().workers_replaced == i
        beat(spare)
        await up.advance(now)
        assert up.status().workers_replaced == i + 1
    status = up.status()
    assert status.phase is P.DONE and not status.running and status.finished is not None
    assert status.summary().startswith("upgraded 2 worker(s)")
    assert [s.shards for s in host.slots] == shards
    assert {s.pid for s in host.slots}.isdisjoint({100, 101})
    # every epoch was acknowledged before the next assignment gave the shards away
    assert [epoch for _, _, epoch in host.assigned] == [1, 2, 3, 4]


async def test_a_second_request_while_one_runs_is_refused_with_the_progress(host: Host) -> None:
    up = RollingUpgrade(host, spare_slot)
    assert up.request("first")[0]
    await up.advance(0.0)
    accepted, status = up.request("second")
    assert not accepted
    assert status.id == 1 and status.phase is P.STARTING and status.requested_by == "first"
    assert len(host.slots) == 2 and len(up.spares()) == 1  # nothing more was started


async def test_a_replacement_that_exits_while_booting_fails_and_the_old_worker_serves_on(
    host: Host,
) -> None:
    up = RollingUpgrade(host, spare_slot)
    old = host.slots[0]
    before = list(old.shards)
    up.request("test")
    await up.advance(0.0)
    [spare] = up.spares()
    assert not up.reap(old.proc.pid if old.proc else 0, 1)  # not ours: the master's business
    assert up.reap(die(spare, 3), 3)
    status = up.status()
    assert status.phase is P.FAILED and "exited with status 3" in (status.error or "")
    assert "worker 0 keeps serving" in (status.error or "")
    assert host.slots[0] is old and old.shards == before and host.assigned == []
    assert up.spares() == [] and up.request("again")[0]  # a new attempt is allowed


async def test_a_replacement_that_cannot_import_the_handlers_says_so(host: Host) -> None:
    up = RollingUpgrade(host, spare_slot)
    up.request("test")
    await up.advance(0.0)
    [spare] = up.spares()
    assert up.reap(die(spare, ExitCode.HANDLERS_BROKEN), ExitCode.HANDLERS_BROKEN)
    error = up.status().error or ""
    assert "could not import the handler code" in error and "keeps serving" in error


async def test_a_replacement_that_cannot_be_spawned_fails_the_upgrade(host: Host) -> None:
    async def no_processes(slot: WorkerSlot) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    host.spawn_worker = no_processes  # type: ignore[method-assign]
    up = RollingUpgrade(host, spare_slot)
    up.request("test")
    await up.advance(0.0)
    status = up.status()
    assert status.phase is P.FAILED and "Resource temporarily unavailable" in (status.error or "")
    assert up.spares() == [] and host.retiring == [] and host.assigned == []


async def test_a_replacement_not_ready_within_the_boot_timeout_is_stopped(host: Host) -> None:
    up = RollingUpgrade(host, spare_slot)
    up.request("test")
    await up.advance(100.0)
    [spare] = up.spares()
    beat(spare, state="booting")
    await up.advance(109.0)
    assert up.status().phase is P.STARTING
    await up.advance(110.5)
    status = up.status()
    assert status.phase is P.FAILED and "workers.boot_timeout_s (10 s)" in (status.error or "")
    assert spare in host.retiring and isinstance(spare.proc, FakeProc)
    assert spare.proc.signals == [signal.SIGTERM] and host.assigned == []


async def test_a_replacement_lost_during_the_handover_gives_the_shards_back(host: Host) -> None:
    up = RollingUpgrade(host, spare_slot)
    old = host.slots[0]
    before = list(old.shards)
    up.request("test")
    await up.advance(0.0)
    [spare] = up.spares()
    beat(spare)
    await up.advance(0.0)
    assert up.status().phase is P.HANDING_OVER and old.shards == []
    assert up.reap(die(spare, 1), 1)
    assert up.status().phase is P.FAILED
    assert host.slots[0] is old and old.shards == before
    assert host.assigned[-1][:2] == (old.pid, tuple(before))


async def test_a_replacement_dying_after_it_took_over_is_left_to_the_restart_policy(
    host: Host,
) -> None:
    up = RollingUpgrade(host, spare_slot)
    up.request("test")
    await up.advance(0.0)
    [spare] = up.spares()
    beat(spare)
    await up.advance(0.0)
    beat(host.slots[0])
    await up.advance(0.0)
    assert up.status().phase is P.TAKING_OVER
    assert not up.reap(die(spare), 1)  # a slot of the master's now
    spare.proc = None  # as reap_worker does
    await up.advance(0.0)
    status = up.status()
    assert status.phase is P.FAILED and "restarted as usual" in (status.error or "")
    assert host.slots[0] is spare and spare.shards  # respawned with its shards


async def test_an_upgrade_waits_for_a_worker_count_change(host: Host) -> None:
    up = RollingUpgrade(host, spare_slot)
    host.rebalance = Rebalance(target=3, epoch=1, phase="shrink", started=0.0)
    up.request("test")
    await up.advance(0.0)
    assert up.status().phase is P.WAITING and up.spares() == []
    host.rebalance = None
    await up.advance(0.0)
    assert up.status().phase is P.STARTING


async def test_a_drain_aborts_quietly_and_refuses_new_upgrades(host: Host) -> None:
    up = RollingUpgrade(host, spare_slot)
    up.request("test")
    await up.advance(0.0)
    [spare] = up.spares()
    host.draining = True
    up.abort("the master is draining")
    assert up.status().phase is P.FAILED and spare in host.retiring
    accepted, status = up.request("late")
    assert not accepted and status.id == 1


def test_every_phase_has_a_way_out_and_a_finished_upgrade_can_run_again() -> None:
    assert set(ALLOWED) == set(P)
    for phase in (P.WAITING, P.STARTING, P.HANDING_OVER, P.TAKING_OVER):
        assert P.FAILED in ALLOWED[phase]
    assert ALLOWED[P.DONE] == ALLOWED[P.FAILED] == frozenset({P.WAITING})


async def test_readiness_stays_true_and_says_upgrading_while_a_worker_hands_over(
    settings_factory: Callable[..., Settings],
) -> None:
    master = Master(settings_factory(workers={"count": 2}))
    pids = iter(range(2000, 3000))

    async def spawn(slot: WorkerSlot) -> None:
        slot.proc = FakeProc(next(pids))  # type: ignore[assignment]

    master.spawn_worker = spawn  # type: ignore[method-assign]
    for slot in master.slots:
        await spawn(slot)
        beat(slot)
    assert master.readiness() == (True, "ok")
    master.upgrade.request("test")
    await master.upgrade.advance(time.monotonic())
    [spare] = master.upgrade.spares()
    beat(spare)
    await master.upgrade.advance(time.monotonic())
    ready, reason = master.readiness()  # worker 0 has not let go yet: no outage either
    assert ready and reason == "upgrading: worker 0 handing over (0 of 2 replaced)"
    master.slots[1].heartbeat = None  # another worker's real trouble still shows
    assert master.readiness() == (False, "worker 1 is not running")
