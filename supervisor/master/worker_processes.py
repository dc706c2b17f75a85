"""The master's worker processes: spawn each as a fresh interpreter, take its heartbeats
from a pipe of its own, reap it and restart it (at once the first time, then backing off;
too many restarts halt the master), and SIGTERM then SIGKILL a worker gone silent.

`WorkerProcesses` is a base of `Master` (supervisor/master/arbiter.py), which sets the
fields declared here. Runs in the master's loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bots.actor.policy import RestartIntensity
from config import Settings
from ipc import pipe
from ipc.heartbeat import Heartbeat, read_heartbeats
from supervisor.exitcodes import ExitCode
from supervisor.master.events import Event, HaltMaster, WorkerExited
from supervisor.master.slots import Standby, WorkerSlot

if TYPE_CHECKING:
    from supervisor.master.upgrade import RollingUpgrade

#: Seconds between SIGTERM to a hung worker and SIGKILL.
KILL_AFTER_S = 2.0
#: Seconds before a standby that died idle is replaced (a broken install would otherwise
#: start one every loop turn).
STANDBY_RETRY_S = 30.0


class WorkerProcesses:
    """Spawn, heartbeats, reap and restart, murder of silent workers; a base of `Master`."""

    # set by Master (supervisor/master/arbiter.py)
    settings: Settings
    events: asyncio.Queue[Event]
    slots: list[WorkerSlot]
    retiring: list[WorkerSlot]
    intensity: RestartIntensity
    draining: bool
    worker_restarts: int
    beat_listeners: list[Callable[[int, Heartbeat], None]]
    upgrade: RollingUpgrade[WorkerSlot]
    standby: Standby | None
    #: no new standby before this (monotonic): the last one died idle
    _standby_not_before: float = 0.0
    _leases: pipe.Leases | None
    _age: int
    _log: Any

    async def spawn_worker(self, slot: WorkerSlot, use_standby: bool = False) -> None:
        """Runs in the master; a fresh interpreter per worker (no fork in a running loop),
        or with `use_standby` the one started ahead of need, if there is one."""
        self._age += 1
        standby = self._take_standby() if use_standby else None
        if standby is not None:
            proc, beat_r = standby.proc, standby.beat_r
        else:
            proc, beat_r = await self._start_process("--index", str(slot.index))
        slot.proc, slot.age, slot.spawned_at = proc, self._age, time.monotonic()
        slot.heartbeat, slot.aborted_at = None, None
        self._send(
            slot,
            pipe.Configure(
                settings=self.settings.to_json_dict(),
                shards=tuple(slot.shards),
                epoch=slot.epoch,
                leases=self._leases,
                warm=tuple(slot.warm),
                sparse_figures=True,  # LiveFigures.on_beat keeps figures between beats
                index=slot.index,
            ),
        )
        slot.watcher = asyncio.create_task(
            self._watch(slot.index, proc), name=f"watch:{slot.index}"
        )
        slot.beats = asyncio.create_task(
            read_heartbeats(beat_r, functools.partial(self._on_heartbeat, slot, proc.pid)),
            name=f"heartbeats:{slot.index}",
        )
        self._log.info(
            "worker.spawned",
            worker=slot.index,
            pid=proc.pid,
            age=slot.age,
            standby=standby is not None,
        )
        from supervisor.metrics import metrics

        metrics().workers.inc()

    async def _start_process(self, *which: str) -> tuple[asyncio.subprocess.Process, int]:
        beat_r, beat_w = os.pipe()  # the worker's heartbeats: a pipe of its own
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "supervisor.worker.process",
                *which,
                "--heartbeat-fd",
                str(beat_w),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(beat_w,),
            )
        except BaseException:
            os.close(beat_r)
            raise
        finally:
            os.close(beat_w)
        return proc, beat_r

    # -- the standby: a worker process whose imports are done before it is needed ------------

    async def keep_standby(self) -> None:
        """One standby once every worker has booted (not before: it would compete with
        their start), none while draining or upgrading (it would run the old code)."""
        if self.draining or self.upgrade.running or not self.settings.workers.standby:
            await self.drop_standby()  # also when a reload turned it off
            return
        standby, now = self.standby, time.monotonic()
        if standby is not None:
            if standby.proc.returncode is None:
                return
            # it died idle (killed by hand, out of memory): another, but not in a loop
            self._log.info("worker.standby_exited", returncode=standby.proc.returncode)
            os.close(standby.beat_r)
            self.standby, self._standby_not_before = None, now + STANDBY_RETRY_S
        if now < self._standby_not_before:
            return
        if not all(s.heartbeat is not None and s.heartbeat.state != "booting" for s in self.slots):
            return
        proc, beat_r = await self._start_process("--standby")
        self.standby = Standby(proc, beat_r)
        self._log.info("worker.standby_started", pid=proc.pid)

    def _take_standby(self) -> Standby | None:
        standby, self.standby = self.standby, None
        if standby is not None and standby.proc.returncode is not None:
            os.close(standby.beat_r)  # it died idle: start afresh
            return None
        return standby

    async def drop_standby(self) -> None:
        """SIGTERM: a standby has no handlers yet (still importing, or blocked on its first
        line), so it ends at once, with nothing to save."""
        standby, self.standby = self.standby, None
        if standby is None:
            return
        os.close(standby.beat_r)
        with contextlib.suppress(ProcessLookupError):
            standby.proc.terminate()
        try:
            async with asyncio.timeout(5):
                await standby.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                standby.proc.kill()

    def _on_heartbeat(self, slot: WorkerSlot, pid: int, hb: Heartbeat) -> None:
        if slot.pid == pid:
            slot.heartbeat, slot.heartbeat_seen = hb, time.monotonic()
            for listener in self.beat_listeners:
                listener(slot.index, hb)

    def _send(self, slot: WorkerSlot, message: pipe.PipeMessage) -> None:
        if slot.proc is not None and slot.proc.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                slot.proc.stdin.write(pipe.encode(message))

    async def _watch(self, index: int, proc: asyncio.subprocess.Process) -> None:
        returncode = await proc.wait()
        self.events.put_nowait(WorkerExited(index, proc.pid, returncode))

    def reap_worker(self, event: WorkerExited) -> None:
        from supervisor.metrics import mark_dead, metrics

        mark_dead(event.pid)
        metrics().workers.dec()
        for retired in self.retiring:
            if retired.proc is not None and retired.proc.pid == event.pid:
                self.retiring.remove(retired)
                self._log.info("worker.retired", worker=retired.index, pid=event.pid)
                return
        if self.upgrade.reap(event.pid, event.returncode):
            return
        slot = next((s for s in self.slots if s.proc and s.proc.pid == event.pid), None)
        if slot is None or slot.proc is None:
            return
        slot.proc = None
        if self.draining:
            return
        self._log.error(
            "worker.died", worker=event.index, pid=event.pid, returncode=event.returncode
        )
        now = time.monotonic()
        if not self.intensity.record(now):
            raise HaltMaster(
                f"workers restarted more than {self.intensity.max_restarts} times in "
                f"{self.intensity.within_s:g} s; giving up so systemd can take over",
                ExitCode.RESTART_INTENSITY,
            )
        # first restart at once (its bots must poll again within a second), then back off
        if now - slot.spawned_at > self.intensity.within_s:
            slot.restarts_in_row = 0
        slot.respawn_at = now + (
            0 if slot.restarts_in_row == 0 else min(0.5 * 2**slot.restarts_in_row, 10)
        )
        slot.restarts_in_row += 1
        slot.restarts += 1
        self.worker_restarts += 1
        metrics().worker_restarts.inc()

    def murder_stale_workers(self) -> None:
        """Two passes: SIGTERM a silent worker, SIGKILL it if still there KILL_AFTER_S later."""
        now = time.monotonic()
        w = self.settings.workers
        for slot in self.slots:
            pid = slot.pid
            if pid is None:
                continue
            if slot.aborted_at is not None:
                if now - slot.aborted_at > KILL_AFTER_S:
                    self._log.error("worker.kill", worker=slot.index, pid=pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                continue
            if slot.heartbeat is None:
                stale = now - slot.spawned_at > w.boot_timeout_s
            elif slot.heartbeat.state == "booting":
                stale = (
                    now - slot.spawned_at > w.boot_timeout_s
                    and now - slot.heartbeat_seen > w.heartbeat_timeout_s
                )
            else:
                stale = now - slot.heartbeat_seen > w.heartbeat_timeout_s
            if stale:
                self._log.error("worker.hung", worker=slot.index, pid=pid)
                slot.aborted_at = now
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def grant_grace(self, now: float) -> None:
        """The master itself was not looking (its loop stalled): a silence it caused is
        not the workers' fault, so every worker gets a fresh heartbeat timeout."""
        for slot in self.slots:
            slot.heartbeat_seen = max(slot.heartbeat_seen, now)
            if slot.heartbeat is None:
                slot.spawned_at = max(slot.spawned_at, now)
