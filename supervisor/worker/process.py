"""A worker process: hosts the bot actors of its shards. Started by the master as
`python -m supervisor.worker.process --index W`; the first stdin line carries settings and the
shards to own, later lines new settings (reload) and new shard assignments (rebalance).

Must-live services (heartbeat, control subscriber, reconciler, master pipe) run in
one TaskGroup: if one dies the worker dies and the master restarts it. Bot actors
run under `bots.actor.supervise` and never reach the TaskGroup.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import resource
import signal
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis
import structlog
from pydantic import ValidationError
from redis.exceptions import RedisError

from bots.actor.webhook_mode import WebhookSetup
from bots.handlers.base import HandlerDeps
from bots.llm.service import open_llm
from bots.telegram.sessions import open_session_pool
from config import ConfigError, Settings
from context import ContextStore, open_context_store
from ipc import keys, pipe
from ipc.control import listen
from ipc.fencing import Fencing
from ipc.heartbeat import PER_BOT_MAX, Heartbeat, HeartbeatSender, reply_status
from ipc.inbox import Inbox
from ipc.messages import BadMessage, Message, Reconcile, StatusRequest
from ipc.offsets import RedisProgress
from ipc.redis_client import redis_client
from supervisor.exitcodes import ExitCode
from supervisor.failures import redis_address
from supervisor.registry.audit import open_audit
from supervisor.registry.bot_records import BotState
from supervisor.registry.bots import Registry
from supervisor.registry.broadcasts import BroadcastStore
from supervisor.registry.changes import ChangeFeed
from supervisor.registry.tokenbox import open_tokenbox
from supervisor.services import create_pool
from supervisor.worker.broadcaster import Broadcaster
from supervisor.worker.chat_recorder import ChatRecorder
from supervisor.worker.context_metrics import ContextMetrics
from supervisor.worker.fleet import Fleet
from supervisor.worker.inbox_reader import InboxReader
from supervisor.worker.manager_admin import ManagerAdmin
from supervisor.worker.reconcile import Reconciler
from supervisor.worker.ticker import ticker
from supervisor.worker.usage_meter import open_usage_meter

if TYPE_CHECKING:
    import asyncpg

    from bots.llm.client import LLMClient

log = structlog.get_logger(__name__)

#: The worker's one-line picture of its fleet is logged at most this often.
FLEET_LOG_EVERY_S = 10.0
#: While draining, a Redis call waits at most this long: a hung Redis must not hold up
#: an exit (PostgreSQL, not Redis, keeps what matters; see context/service.py).
SHUTDOWN_REDIS_S = 0.5
#: how long a drained worker waits for the progress its actors marked to be written
FINAL_SAVE_S = 2.0
#: each pool's close at exit (part of config.sections.runtime.WORKER_TEARDOWN_S)
POOL_CLOSE_S = 1.0
#: how long a drained worker keeps cancelling services that do not stop
STOP_SERVICES_S = 3.0


def raise_nofile_limit() -> int:
    """Long polls hold a socket per bot: lift the soft fd limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _innermost(task: asyncio.Task[Any]) -> str:
    """Where a task waits: the innermost coroutine of its await chain, as name:line."""
    coro: Any = task.get_coro()
    where = "?"
    for _ in range(50):
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            where = f"{frame.f_code.co_qualname}:{frame.f_lineno}"
        nxt = getattr(coro, "cr_await", None)
        if nxt is None:
            break
        coro = nxt
    return where


class Worker:
    def __init__(
        self,
        settings: Settings,
        index: int,
        shards: list[int],
        epoch: int,
        heartbeat_fd: int | None = None,
        warm: list[int] | None = None,
        sparse_figures: bool = False,
    ) -> None:
        self.settings = settings
        #: the master keeps per-bot figures between beats (pipe `Configure.sparse_figures`)
        self._sparse_figures = sparse_figures
        #: shards whose handlers to import at boot (a rolling upgrade's replacement)
        self.warm = warm or []
        self._heartbeat_fd = heartbeat_fd
        self._beats: HeartbeatSender | None = None
        self._redis_beat_failures = 0
        self._fleet_logged: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self._fleet_logged_at = -FLEET_LOG_EVERY_S
        self.index = index
        self.shards = shards
        #: the shard assignment (from the master) this worker's bots now match
        self.epoch = -1
        self._assigned_epoch = epoch
        self.host = settings.host.id
        #: this host's shard leases, from the master (pipe `Leases`)
        self.fencing = Fencing(settings.workers.shards)
        self.state = "booting"
        self.exit_status: int = ExitCode.OK
        self.desired = 0
        self.loop_lag = 0.0
        self._drain = asyncio.Event()
        self._reconcile_now = asyncio.Event()
        self._ppid = os.getppid()
        # set by run() once the services are open
        self.context: ContextStore | None = None
        self.llm: LLMClient | None = None
        self.inbox: Inbox | None = None
        self._exported: dict[str, int] = {}  # counters already added to Prometheus
        self._last_health: dict[str, str] = {}  # the layers' states last logged
        self._window: list[float] = []
        self._last_heartbeat: Heartbeat | None = None
        self._rate_base: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self._log = log.bind(worker=index)

    # -- entry ------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._drain.set)
        # Ctrl-C reaches the whole process group; the master decides, workers wait for it.
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        raise_nofile_limit()
        s = self.settings
        assert s.redis.url is not None and s.database.url is not None
        if self._heartbeat_fd is not None:
            self._beats = await HeartbeatSender.open(self._heartbeat_fd)
        redis = redis_client(s.redis.url, s.redis.timeout_s, s.redis.pool_max)
        pool = await create_pool(s)
        try:
            async with (
                open_session_pool(s) as sessions,
                open_context_store(s, redis=redis, pool=pool) as context,
                open_llm(s.openai) as llm,
                open_audit(pool, s.database.timeout_s) as audit,  # the manager bot's actions
                open_usage_meter(redis, pool, lambda: self.settings) as usage,  # quotas
            ):
                self.registry = Registry(pool, open_tokenbox(s), s.database.timeout_s)
                self.progress = RedisProgress(
                    redis, s.redis.prefix, s.redis.timeout_s, self.fencing
                )
                feed = ChangeFeed(pool, s.database.timeout_s)
                self.reconciler = Reconciler(
                    self, feed, self.registry.decrypt, self.registry.open_secret, usage.know_owner
                )
                session = sessions.default
                self.context, self.llm = context, llm  # heartbeats read their health and stats
                self._context_metrics = ContextMetrics(s.metrics.per_bot_labels)
                admin = ManagerAdmin(
                    self.registry, pool, session, lambda: self.settings, redis, audit=audit
                )
                deps = HandlerDeps(context, llm, admin, usage=usage)
                self.inbox = self._open_inbox(redis)
                self.chats = ChatRecorder(pool, lambda: self.settings)
                self.fleet = Fleet(
                    s,
                    session,
                    self._on_disabled,
                    self.progress,
                    deps,
                    self.inbox if s.bots.inbox else None,
                    self.chats,
                    self._webhook_setup(),
                )
                store = BroadcastStore(pool, s.database.timeout_s)
                self.broadcaster = Broadcaster(store, self.fleet.handles, lambda: self.settings)
                self.fleet.sessions = sessions  # per-bot proxies get pools of their own
                self.redis = redis
                await self._serve()
        finally:
            await _close_pools(pool, redis)

    def _webhook_setup(self) -> WebhookSetup | None:
        w = self.settings.webhook
        if w.public_url is None or self.inbox is None:
            return None
        return WebhookSetup(
            w.public_url, self.inbox, tuple(w.allowed_updates), w.max_connections, w.certificate
        )

    def _open_inbox(self, redis: aioredis.Redis) -> Inbox | None:
        """The shard streams: polled updates (`bots.inbox`) and webhook ones go there."""
        b = self.settings.bots
        if not b.inbox and not self.settings.webhook.enabled:
            return None
        return Inbox(
            redis,
            self.settings.redis.prefix,
            self.settings.workers.shards,
            f"{self.host}:{self.index}:{os.getpid()}",
            self.settings.redis.timeout_s,
            b.inbox_backlog_max,
            b.inbox_claim_idle_s,
        )

    async def _serve(self) -> None:
        async with asyncio.TaskGroup() as tg:
            services = [
                tg.create_task(self._heartbeat_loop(), name="worker:heartbeat"),
                tg.create_task(self.progress.run(), name="worker:progress"),
                tg.create_task(self._control_loop(), name="worker:control"),
                tg.create_task(self._master_pipe(), name="worker:master-pipe"),
                tg.create_task(self._reconcile_loop(), name="worker:reconcile"),
                tg.create_task(self.chats.run(), name="worker:chats"),
                tg.create_task(self.broadcaster.run(), name="worker:broadcasts"),
            ]
            if self.inbox is not None:
                reader = InboxReader(
                    self.inbox, self.fleet.handles, lambda: self.shards, self.fleet.bounds.queue
                )
                self.inbox_reader = reader
                services += [
                    tg.create_task(self.inbox.run(), name="worker:inbox-acks"),
                    tg.create_task(reader.run(), name="worker:inbox-reader"),
                ]
            await self._drain.wait()
            self.state = "draining"
            self._log.info("worker.draining", bots=len(self.fleet.handles))
            # bounded well below the master's kill-on-drain (shutdown.kill_after_s): a drain
            # that overruns says what it was waiting for instead of being SIGKILLed in silence
            cutoff = self.settings.shutdown.drain_cutoff_s
            loop = asyncio.get_running_loop()
            watchdog = loop.call_later(cutoff - 1.0, self._report_stuck_drain)
            try:
                async with asyncio.timeout(cutoff):
                    await self._drain_fleet(save_by=loop.time() + cutoff - 1.5)
            except TimeoutError:
                self._log.error(
                    "worker.drain_overrun",
                    bots_left=self.fleet.counts(),
                    grace_s=self.settings.shutdown.grace_s,
                )
            finally:
                watchdog.cancel()
            await self._stop_services(services)
        self._log.info("worker.stopped")

    async def _stop_services(self, services: list[asyncio.Task[Any]]) -> None:
        """Cancel the services and wait for them, cancelling again any that carried on: a
        library may turn the CancelledError into its own error inside our retry loop (seen:
        the inbox reader's XREADGROUP), which would hold the TaskGroup, and so the exit,
        until the master's SIGKILL."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + STOP_SERVICES_S
        pending = {t for t in services if not t.done()}
        while pending:
            for task in pending:
                task.cancel(msg="drain complete")
            _, pending = await asyncio.wait(pending, timeout=0.5)
            if pending and loop.time() >= give_up:
                stuck = [f"{t.get_name()} @ {_innermost(t)}" for t in pending]
                self._log.error("worker.services_stuck", tasks=stuck)
                return

    def _report_stuck_drain(self) -> None:
        """A drain past its grace: name the tasks still pending and where each waits (a
        cancellation swallowed somewhere would keep the timeout above from firing)."""
        stuck = [f"{t.get_name()} @ {_innermost(t)}" for t in asyncio.all_tasks() if not t.done()]
        self._log.error("worker.drain_stuck", bots_left=len(self.fleet.handles), tasks=stuck[:40])

    async def _drain_fleet(self, save_by: float) -> None:
        await self.broadcaster.stop()  # gives each broadcast back for the next owner
        await self.fleet.stop_all()
        # Each stopping actor waits at most a second for its own record, which thousands of
        # teardowns at once can outlast (`actor.progress_not_saved`). What they marked is
        # written before the flusher is cancelled, else a restart answers it again; not
        # with Redis known down (SIGTERM must act at once: its outage was reported).
        within = min(FINAL_SAVE_S, save_by - asyncio.get_running_loop().time())
        redis_down = self.context is not None and self.context.health()["redis"] == "degraded"
        if within > 0 and not redis_down and not await self.fleet.wait_progress_saved(within):
            self._log.info("worker.progress_not_saved", within_s=round(within, 2))
        if self.inbox is not None and not await self.inbox.flush(self.settings.redis.timeout_s):
            self._log.info("inbox.acks_not_flushed", left=self.inbox.acks_queued - self.inbox.acked)
        self.fleet.harvest()
        await self._write_heartbeat(redis_timeout=SHUTDOWN_REDIS_S)

    # -- services ---------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        """Desired state from PostgreSQL by change and by hint (supervisor/worker/reconcile.py)."""
        await self.reconciler.run()

    async def _heartbeat_loop(self) -> None:
        """Written from this loop, so a blocked loop shows as a stale heartbeat."""
        interval = self.settings.workers.heartbeat_interval_s
        expected = time.monotonic()
        async for now in ticker(interval):
            self.loop_lag = max(0.0, now - expected)
            expected = now + interval
            if os.getppid() != self._ppid:
                self._log.error("worker.orphaned")
                self._drain.set()
            await self._write_heartbeat()
            self._log_fleet(now)

    def _log_fleet(self, now: float) -> None:
        """One INFO line per worker when its fleet's picture changes (at most every
        FLEET_LOG_EVERY_S): per-bot lifecycle lines are DEBUG."""
        hb = self._last_heartbeat
        if hb is None or now - self._fleet_logged_at < FLEET_LOG_EVERY_S:
            return
        picture = {s: n for s, n in hb.bots.items() if n}
        troubles = self.fleet.troubles()
        if (picture, troubles) == self._fleet_logged:
            return
        self._fleet_logged, self._fleet_logged_at = (picture, troubles), now
        self._log.info("worker.fleet", **picture, polling_failing=troubles or None)

    async def _write_heartbeat(self, redis_timeout: float | None = None) -> None:
        from supervisor.metrics import metrics

        samples = self.fleet.harvest()
        m = metrics()
        t = self.fleet.totals
        self._window = (self._window + samples)[-2000:]
        window = sorted(self._window)
        if samples:
            for v in samples:
                m.latency.observe(v)
        hb = Heartbeat(
            index=self.index,
            epoch=self.epoch,
            pid=os.getpid(),
            state=self.state,
            shards=self.shards,
            desired=self.desired,
            bots=self.fleet.counts(),
            loop_lag_s=round(self.loop_lag, 4),
            at=time.time(),
            totals=t.counters(),
            p50_ms=round(_percentile(window, 0.5) * 1000, 2),
            p99_ms=round(_percentile(window, 0.99) * 1000, 2),
            health=self._health(),
        )
        if self._figures_due():
            busy, idle, omitted = self.fleet.figures.snapshot(self.fleet.handles, PER_BOT_MAX)
            hb = replace(hb, per_bot=busy, per_bot_idle=idle, per_bot_omitted=omitted)
        else:
            hb = replace(hb, per_bot_included=False)
        hb.rates.update(self._rates(hb.totals))
        self._last_heartbeat = hb
        if self._beats is not None:
            self._beats.send(hb)  # liveness: the pipe first, whatever Redis does
        self._export(hb)
        await self._store_heartbeat(hb, redis_timeout or self.settings.redis.timeout_s)

    def _figures_due(self) -> bool:
        """Per-bot figures in this beat? Every `dashboard.poll_interval_s` (what open pages
        ask for) to a master that keeps them between beats; in every beat to an older one."""
        if not self.settings.dashboard.enabled:
            return False
        if not self._sparse_figures:
            return True
        every = self.settings.dashboard.poll_interval_s
        return self.fleet.figures.due(every, self.settings.workers.heartbeat_interval_s / 2)

    async def _store_heartbeat(self, hb: Heartbeat, timeout: float) -> None:
        """The copy in Redis serves `botvisor status`; its failures are logged when they
        start and when they end (with a count), never once per beat. A failure also tells
        the context store, so the worker's health says "redis degraded" even while no
        chat is writing."""
        key = keys.heartbeat_key(self.settings.redis.prefix, self.host, self.index)
        ttl = max(int(self.settings.workers.heartbeat_timeout_s * 3), 3)
        try:
            async with asyncio.timeout(timeout):
                await self.redis.set(key, orjson.dumps(hb.summary()), ex=ttl)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            if self.context is not None:
                self.context.redis_failed(exc)
            if self._redis_beat_failures == 0:
                self._log.warning(
                    "heartbeat.redis_unavailable",
                    redis=redis_address(self.settings),
                    error=type(exc).__name__,
                )
            self._redis_beat_failures += 1
            return
        if self._redis_beat_failures:
            self._log.info("heartbeat.redis_back", failed_beats=self._redis_beat_failures)
            self._redis_beat_failures = 0

    def _health(self) -> dict[str, str | int]:
        """The context store's layers; logged when a layer's state changes, not when only
        a count of queued writes does (a degraded layer makes /readyz 503 with the reason)."""
        context = self.context
        health: dict[str, str | int] = dict(context.health()) if context is not None else {}
        if self.inbox is not None:
            # not a /readyz layer: a failing append falls back to confirm-after-handling
            health["inbox"] = self.inbox.health()
        states = {k: v for k, v in health.items() if isinstance(v, str)}
        if states != self._last_health:
            self._log.info("worker.health", **health)
            self._last_health = states
        return health

    def _rates(self, totals: dict[str, int]) -> dict[str, float]:
        """Per-second rates since the previous heartbeat."""
        now = time.monotonic()
        then, before = self._rate_base
        self._rate_base = (now, dict(totals))
        span = max(now - then, 1e-3)
        return {
            f"{name}_per_s": round((totals[name] - before.get(name, 0)) / span, 1)
            for name in ("received", "sent", "limiter_waits", "telegram_429")
        }

    def _export(self, hb: Heartbeat) -> None:
        from supervisor.metrics import metrics

        m = metrics()
        prev = self._exported
        for name, counter in (
            ("received", m.updates_received),
            ("duplicates", m.updates_duplicate),
            ("handled", m.updates_handled),
            ("dropped", m.updates_dropped),
            ("handler_errors", m.handler_errors),
            ("sent", m.messages_sent),
            ("telegram_429", m.telegram_429),
            ("conflicts", m.conflicts),
            ("limiter_waits", m.limiter_waits),
            ("restarts", m.actor_restarts),
            ("poll_errors", m.poll_errors),
        ):
            delta = hb.totals.get(name, 0) - prev.get(name, 0)
            if delta > 0:
                counter.inc(delta)
        self._exported = dict(hb.totals)
        for state, n in hb.bots.items():
            m.bots.labels(state=state).set(n)
        m.loop_lag.labels(worker=str(self.index)).set(hb.loop_lag_s)
        self._context_metrics.export(self.context, self.llm)

    async def _control_loop(self) -> None:
        """Hints over pub/sub. At-most-once delivery is fine: the timer reconciles anyway."""
        await listen(
            self.redis,
            self.settings.redis.prefix,
            self._on_control,
            on_subscribed=self._reconcile_now.set,  # we may have missed hints while away
        )

    async def _on_control(self, message: Message) -> None:
        match message:
            case Reconcile(bots=bots):
                self.reconciler.hint(bots)
            case StatusRequest(reply_to=reply_to):
                await reply_status(
                    self.redis, reply_to, {"role": "worker", "host": self.host, **self._status()}
                )

    def _status(self) -> dict[str, Any]:
        hb = self._last_heartbeat
        return hb.summary() if hb is not None else {"index": self.index, "state": self.state}

    async def _master_pipe(self) -> None:
        """Line-delimited JSON from the master on stdin; EOF means the master is gone."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                self._log.warning("worker.master_gone")
                self._drain.set()
                return
            try:
                match pipe.decode(line):
                    case pipe.Configure(settings=settings):
                        self._reload(Settings.model_validate(settings))
                    case pipe.Assign(shards=shards, epoch=epoch):
                        self._assign(list(shards), epoch)
                    case pipe.Leases() as leases:
                        self.use_leases(leases)
            except (BadMessage, ValidationError) as exc:
                self._log.warning("worker.bad_master_message", error=type(exc).__name__)

    def use_leases(self, leases: pipe.Leases) -> None:
        """This host's renewed leases: fencing epochs and until when the bots may act."""
        deadline = math.inf if leases.valid_until is None else leases.valid_until
        self.fencing.update(leases.epochs, deadline)

    def _assign(self, shards: list[int], epoch: int) -> None:
        """New shards from the master (rebalance): reconcile to them at once."""
        self._log.info("worker.assigned", shards=len(shards), epoch=epoch)
        self.shards, self._assigned_epoch = shards, epoch
        self._reconcile_now.set()

    def _reload(self, settings: Settings) -> None:
        from config.log_levels import set_level

        self.settings = settings
        set_level(settings.log.level)
        self.fleet.retune_all(settings)
        try:  # a rotated keyring (security.encryption_key / previous_keys)
            self.registry.use_tokenbox(open_tokenbox(settings))
        except ConfigError as exc:
            self._log.error("worker.keyring_rejected", error=str(exc), kept="running keyring")
        self._log.info("worker.reloaded")

    async def _on_disabled(self, bot_id: int, reason: str) -> None:
        # only the revision this worker runs: an admin's change since (a pause before a
        # move to another Bot API server, a new token) wins over a stale actor's 401
        handle = self.fleet.handles.get(bot_id)
        revision = handle.actor.spec.revision if handle is not None else None
        await self.registry.set_state(bot_id, BotState.DISABLED, reason, if_revision=revision)
        self._reconcile_now.set()


async def _close_pools(pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
    """Close within POOL_CLOSE_S each: asyncpg's close waits for every connection's release
    and a restarted Redis may not answer; an exiting worker terminates what lingers."""
    try:
        async with asyncio.timeout(POOL_CLOSE_S):
            await pool.close()
    except TimeoutError:
        pool.terminate()
    with contextlib.suppress(TimeoutError, OSError, RedisError):
        async with asyncio.timeout(POOL_CLOSE_S):
            await redis.aclose()


def read_first_line(fd: int) -> bytes:
    """The master's first pipe line, read without a buffer: the master may already have
    written the next (a lease renewal, a new assignment), and a buffered read would take
    part of it away from the loop's reader."""
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return bytes(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="botvisor-worker", description=__doc__)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument(
        "--heartbeat-fd", type=int, default=None, help="pipe to the master for heartbeats"
    )
    args = parser.parse_args(argv)
    from config.logging import configure_logging

    line = read_first_line(sys.stdin.fileno())
    try:
        first = pipe.decode(line)
        if not isinstance(first, pipe.Configure) or first.shards is None or first.epoch is None:
            raise BadMessage("the first pipe message must carry settings, shards and epoch")
        settings = Settings.model_validate(first.settings)
        shards, epoch, leases = list(first.shards), first.epoch, first.leases
        warm = list(first.warm)
    except (BadMessage, ValidationError) as exc:
        print(f"worker: bad settings from master: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None
    configure_logging(settings.log.level, settings.log.format, background=True)
    structlog.contextvars.bind_contextvars(worker=args.index)
    # Thousands of long-lived actor objects make every full collection walk them all:
    # measured 300-750 ms pauses, 14-21 per 45 s at 5,000 bots. Collect young objects
    # rarely and freeze the long-lived ones once the fleet is up (supervisor/worker/reconcile.py).
    gc.set_threshold(50_000, 20, 100)
    try:
        import uvloop

        worker = Worker(
            settings, args.index, shards, epoch, args.heartbeat_fd, warm, first.sparse_figures
        )
        if leases is not None:
            worker.use_leases(leases)
        uvloop.run(worker.run())
    except ConfigError as exc:
        log.error("worker.config_error", error=str(exc))
        raise SystemExit(ExitCode.CONFIG) from None
    raise SystemExit(worker.exit_status)


if __name__ == "__main__":
    main()
