"""The master: spawns worker processes, reaps and restarts them, serves HTTP, talks to
systemd. Shaped after gunicorn's Arbiter: one loop, one event queue.

Signal handlers and child watchers only put events on the queue; `run()` drains
events, dispatches them, then reaps, murders stale workers and manages the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import structlog

from bots.actor.policy import RestartIntensity
from config import ConfigError, Settings
from ipc import pipe
from ipc.control import listen
from ipc.heartbeat import Heartbeat, read_heartbeats, reply_status
from ipc.messages import Drain, Message, Reload, StatusRequest, Upgrade
from ipc.redis_client import redis_client
from supervisor.exitcodes import ExitCode
from supervisor.master.sdnotify import Notifier
from supervisor.master.shards import shards_of_worker
from supervisor.master.upgrade import RollingUpgrade

log = structlog.get_logger(__name__)

#: Seconds between SIGTERM to a hung worker and SIGKILL.
KILL_AFTER_S = 2.0
#: SIGUSR2 asks for a rolling code upgrade (supervisor/master/upgrade.py)
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)


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


def _spare_slot(index: int, epoch: int, warm: list[int]) -> WorkerSlot:
    """A rolling upgrade's replacement: owns nothing yet, imports the handlers of `warm`."""
    return WorkerSlot(index, shards=[], epoch=epoch, warm=warm)


class Master:
    def __init__(
        self,
        settings: Settings,
        reload_settings: Callable[[], Settings] | None = None,
        owned: frozenset[int] | None = None,
    ) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        #: the shards this host holds leases on (supervisor/master/leases.py); None: all
        self.owned = owned
        self._leases: pipe.Leases | None = None
        count = settings.workers.count
        self.slots = [WorkerSlot(i, shards=self._shards_for(i, count)) for i in range(count)]
        #: TTIN/TTOU style: reload changes this only; manage_workers converges to it
        self.desired_workers = count
        self.rebalance: Rebalance | None = None
        self.retiring: list[WorkerSlot] = []
        self._epoch = 0
        self.intensity = RestartIntensity(
            settings.workers.restart_max, settings.workers.restart_within_s
        )
        self.notifier = Notifier()
        self.host = settings.host.id
        self.draining = False
        self.ready_notified = False
        self.worker_restarts = 0
        #: called with (worker index, heartbeat) on every beat (the dashboard's figures);
        #: must not block
        self.beat_listeners: list[Callable[[int, Heartbeat], None]] = []
        self.started = time.monotonic()
        self._age = 0
        self._last_watchdog = 0.0
        self._force = False
        self._redis = redis_client(
            settings.redis.url or "", settings.redis.timeout_s, settings.redis.pool_max
        )
        self._log = log.bind(role="master")
        #: rolling code upgrade: SIGUSR2, `botvisor upgrade`, POST /v1/upgrade
        self.upgrade = RollingUpgrade(self, _spare_slot)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Runs until drained (returns 0) or halted (raises HaltMaster)."""
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.events.put_nowait, SignalReceived(sig))
        control = asyncio.create_task(self._control_loop(), name="master:control")
        try:
            last_tick = time.monotonic()
            while not self.draining:
                await self._next_events()
                now = time.monotonic()
                if now - last_tick > self.settings.workers.heartbeat_timeout_s / 2:
                    self._log.warning("master.stalled", seconds=round(now - last_tick, 2))
                    self.grant_grace(now)
                last_tick = now
                self.murder_stale_workers()
                await self.manage_workers()
                self.notify_systemd()
            return await self.drain()
        finally:
            control.cancel()
            await asyncio.gather(control, return_exceptions=True)
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
            await self._redis.aclose()

    async def _control_loop(self) -> None:
        """`botvisor reload` and the admin API publish the same `Reload` that SIGHUP makes;
        it becomes an event like the signal. Status requests are answered here."""
        await listen(self._redis, self.settings.redis.prefix, self._on_control)

    async def _on_control(self, message: Message) -> None:
        match message:
            case Reload() | Drain():
                self.events.put_nowait(message)
            case Upgrade(reply_to=reply_to):
                accepted, state = self.upgrade.request("botvisor upgrade")
                if reply_to is not None:
                    await reply_status(
                        self._redis, reply_to, {"accepted": accepted, "upgrade": state.to_json()}
                    )
            case StatusRequest(reply_to=reply_to):
                ready, reason = self.readiness()
                await reply_status(
                    self._redis,
                    reply_to,
                    {
                        "role": "master",
                        "host": self.host,
                        "shards": sorted(self.owned) if self.owned is not None else None,
                        "pid": os.getpid(),
                        "workers": len(self.slots),
                        "worker_restarts": self.worker_restarts,
                        "ready": ready,
                        "reason": reason,
                        "upgrade": self.upgrade.status().to_json(),
                    },
                )

    async def _next_events(self) -> None:
        try:
            # a rebalance advances on heartbeats: look at them more often meanwhile
            tick = 0.1 if self.rebalance is not None else 0.5
            event = await asyncio.wait_for(self.events.get(), timeout=tick)
        except TimeoutError:
            return
        self.dispatch(event)
        while not self.events.empty():
            self.dispatch(self.events.get_nowait())

    def dispatch(self, event: Event) -> None:
        match event:
            case WorkerExited():
                self.reap_worker(event)
            case SignalReceived(signum=signal.SIGHUP) | Reload():
                self.reload()
            case SignalReceived(signum=signal.SIGUSR2):
                self.upgrade.request("SIGUSR2")
            case SignalReceived() | Drain():
                if self.draining:
                    self._force = True
                self.draining = True

    # -- workers ----------------------------------------------------------------------------

    async def spawn_worker(self, slot: WorkerSlot) -> None:
        """Runs in the master; a fresh interpreter per worker (no fork in a running loop)."""
        self._age += 1
        beat_r, beat_w = os.pipe()  # the worker's heartbeats: a pipe of its own
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "supervisor.worker.process",
                "--index",
                str(slot.index),
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
            ),
        )
        slot.watcher = asyncio.create_task(
            self._watch(slot.index, proc), name=f"watch:{slot.index}"
        )
        slot.beats = asyncio.create_task(
            read_heartbeats(beat_r, functools.partial(self._on_heartbeat, slot, proc.pid)),
            name=f"heartbeats:{slot.index}",
        )
        self._log.info("worker.spawned", worker=slot.index, pid=proc.pid, age=slot.age)
        from supervisor.metrics import metrics

        metrics().workers.inc()

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

    async def manage_workers(self) -> None:
        now = time.monotonic()
        self.manage_rebalance()
        await self.upgrade.advance(now)  # before respawning: it may replace a dead worker
        for slot in self.slots:
            if slot.proc is None and now >= slot.respawn_at:
                await self.spawn_worker(slot)

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

    def lease_health(self) -> dict[str, object]:
        """What this host tells the cluster with each renewal (`botvisor status`)."""
        ready, reason = self.readiness()
        beats = [s.heartbeat for s in self.slots if s.heartbeat is not None]
        bots = {
            "running": sum(hb.running for hb in beats),
            "desired": sum(hb.desired for hb in beats),
            "workers": len(self.slots),
        }
        return {"ready": ready, "reason": reason, "bots": bots}

    def assign_nowait(self, slot: WorkerSlot, shards: list[int]) -> None:
        """Give `slot` a new shard set under a new epoch (rolling upgrade). Runs in the
        master; its heartbeat echoes the epoch once its bots match the set."""
        self._epoch += 1
        slot.shards, slot.epoch = list(shards), self._epoch
        self._send(slot, pipe.Assign(shards=tuple(slot.shards), epoch=self._epoch))

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

    # -- readiness, systemd ------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """Ready when every worker heartbeats, has booted, and runs every bot it should."""
        if self.draining:
            return False, "draining"
        if self.rebalance is not None:
            return False, f"moving shards to {self.rebalance.target} workers"
        moving = self.upgrade.moving_worker()  # its bots' sub-second handover is no outage
        for slot in self.slots:
            if slot.index == moving:
                continue
            hb = slot.heartbeat
            if slot.pid is None or hb is None:
                return False, f"worker {slot.index} is not running"
            if hb.epoch < slot.epoch:
                return False, f"worker {slot.index} is taking over its shards"
            if hb.state != "ready":
                return False, f"worker {slot.index} is {hb.state}"
            for layer in ("redis", "postgres"):
                if hb.health.get(layer, "ok") != "ok":
                    return False, f"worker {slot.index}: {layer} {hb.health[layer]}"
            if hb.running < hb.desired:
                return False, f"worker {slot.index} runs {hb.running} of {hb.desired} bots"
        if self.upgrade.running:
            return True, self.upgrade.status().summary()
        return True, "ok"

    def notify_systemd(self) -> None:
        if not self.ready_notified and self.readiness()[0]:
            self.ready_notified = True
            self.notifier.notify("READY=1", f"STATUS=serving {len(self.slots)} workers")
            self._log.info("master.ready", workers=len(self.slots))
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval is not None and now - self._last_watchdog >= interval:
            self._last_watchdog = now
            self.notifier.notify("WATCHDOG=1")

    # -- reload, drain -----------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP and `botvisor reload`: a bad new config keeps the running one."""
        if self._reload_settings is None:
            return
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            new = self._reload_settings()
        except ConfigError as exc:
            self._log.error("master.reload_rejected", error=str(exc), kept="running config")
            self.notifier.notify("READY=1")
            return
        from config.log_levels import set_level

        if new.workers.shards != self.settings.workers.shards:
            self._log.error(
                "master.reload_shards_ignored",
                running=self.settings.workers.shards,
                requested=new.workers.shards,
                reason="workers.shards is fixed per deployment",
            )
            workers = new.workers.model_copy(update={"shards": self.settings.workers.shards})
            new = new.model_copy(update={"workers": workers})
        if new.host.id != self.settings.host.id:
            # the leases, the master lock and the heartbeats are held under the old id
            self._log.error(
                "master.reload_host_id_ignored",
                running=self.settings.host.id,
                requested=new.host.id,
                reason="host.id applies at start",
            )
            new = new.model_copy(update={"host": self.settings.host})
        self.desired_workers = new.workers.count
        self.settings = new
        for slot in [*self.slots, *self.upgrade.spares()]:
            self._send(slot, pipe.Configure(settings=new.to_json_dict()))
        self._log.info("master.reloaded", log_level=new.log.level)  # before a quieter level
        set_level(new.log.level)
        self.notifier.notify("READY=1")

    async def drain(self) -> int:
        """Stop intake everywhere, let handlers finish within the grace, exit 0."""
        self.notifier.notify("STOPPING=1")
        self._log.info("master.draining")
        self.upgrade.abort("the master is draining")  # a booting spare joins the retiring
        procs = [
            s.proc
            for s in [*self.slots, *self.retiring]
            if s.proc is not None and s.proc.returncode is None
        ]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = self.settings.shutdown.kill_after_s
        waiters = [asyncio.ensure_future(p.wait()) for p in procs]
        if waiters:
            _, pending = await asyncio.wait(waiters, timeout=deadline)
            for proc in procs:
                if proc.returncode is None:
                    self._log.error("worker.kill_on_drain", pid=proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for slot in [*self.slots, *self.retiring]:
            for task in (slot.watcher, slot.beats):
                if task is not None:
                    task.cancel()
        self._log.info("master.stopped")
        return ExitCode.OK
