"""The master: spawns worker processes, reaps and restarts them, serves HTTP, talks to
systemd. Shaped after gunicorn's Arbiter: one loop, one event queue.

Signal handlers and child watchers only put events on the queue; `run()` drains
events, dispatches them, then reaps, murders stale workers and manages the count.
The worker processes themselves are handled in worker_processes.py, the moves of
shards between them in shard_moves.py (both bases of `Master`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

import structlog

from bots.actor.policy import RestartIntensity
from config import ConfigError, Settings
from ipc import pipe
from ipc.control import listen
from ipc.heartbeat import Heartbeat, reply_status
from ipc.messages import Drain, Message, Reload, StatusRequest, Upgrade
from ipc.redis_client import redis_client
from supervisor.exitcodes import ExitCode
from supervisor.master.events import Event, SignalReceived, WorkerExited
from supervisor.master.sdnotify import Notifier
from supervisor.master.shard_moves import ShardMoves
from supervisor.master.slots import Rebalance, Standby, WorkerSlot, spare_slot
from supervisor.master.upgrade import RollingUpgrade

log = structlog.get_logger(__name__)

#: SIGUSR2 asks for a rolling code upgrade (supervisor/master/upgrade.py)
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)


class Master(ShardMoves):
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
        self.standby: Standby | None = None
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
        self.upgrade = RollingUpgrade(self, spare_slot)

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

    async def manage_workers(self) -> None:
        now = time.monotonic()
        self.manage_rebalance()
        await self.upgrade.advance(now)  # before respawning: it may replace a dead worker
        for slot in self.slots:
            if slot.proc is None and now >= slot.respawn_at:
                # a dead worker's replacement: the standby, imports done, if there is one
                await self.spawn_worker(slot, use_standby=slot.restarts > 0)
        await self.keep_standby()

    # -- readiness: systemd, the cluster (lease health) ---------------------------------------

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
        await self.drop_standby()
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
