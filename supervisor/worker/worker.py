"""The worker: opens its services (pools, context store, LLM client, inbox, fleet of bot
actors) and runs them until drained. Started by supervisor/worker/process.py.

Must-live services (heartbeat, control subscriber, reconciler, master pipe) run in
one TaskGroup: if one dies the worker dies and the master restarts it. Bot actors
run under `bots.actor.supervise` and never reach the TaskGroup. The heartbeat lives in
heartbeats.py, what the master and the control channel tell the worker in commands.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from bots.actor.webhook_mode import WebhookSetup
from bots.handlers.base import HandlerDeps
from bots.llm.service import open_llm
from bots.telegram.sessions import open_session_pool
from config import Settings
from context import open_context_store
from ipc.fencing import Fencing
from ipc.heartbeat import HeartbeatSender
from ipc.inbox import Inbox
from ipc.offsets import RedisProgress
from ipc.redis_client import redis_client
from supervisor.exitcodes import ExitCode
from supervisor.registry.audit import open_audit
from supervisor.registry.bot_records import BotState
from supervisor.registry.bots import Registry
from supervisor.registry.broadcasts import BroadcastStore
from supervisor.registry.changes import ChangeFeed
from supervisor.registry.tokenbox import open_tokenbox
from supervisor.services import create_pool
from supervisor.worker.broadcaster import Broadcaster
from supervisor.worker.chat_recorder import ChatRecorder
from supervisor.worker.commands import WorkerCommands
from supervisor.worker.context_metrics import ContextMetrics
from supervisor.worker.fleet import Fleet
from supervisor.worker.inbox_reader import InboxReader
from supervisor.worker.manager_admin import ManagerAdmin
from supervisor.worker.reconcile import Reconciler
from supervisor.worker.stuck_tasks import stop_services, where_tasks_wait
from supervisor.worker.usage_meter import open_usage_meter

if TYPE_CHECKING:
    import asyncpg

log = structlog.get_logger(__name__)

#: While draining, a Redis call waits at most this long: a hung Redis must not hold up
#: an exit (PostgreSQL, not Redis, keeps what matters; see context/service.py).
SHUTDOWN_REDIS_S = 0.5
#: how long a drained worker waits for the progress its actors marked to be written
FINAL_SAVE_S = 2.0
#: each pool's close at exit (part of config.sections.runtime.WORKER_TEARDOWN_S)
POOL_CLOSE_S = 1.0


def raise_nofile_limit() -> int:
    """Long polls hold a socket per bot: lift the soft fd limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Worker(WorkerCommands):
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
        super().__init__(sparse_figures)
        self.settings = settings
        #: shards whose handlers to import at boot (a rolling upgrade's replacement)
        self.warm = warm or []
        self._heartbeat_fd = heartbeat_fd
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
        self._drain = asyncio.Event()
        self._reconcile_now = asyncio.Event()
        self._ppid = os.getppid()
        # set by run() once the services are open
        self.context = None
        self.llm = None
        self.inbox = None
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
                    sessions,
                    self._on_disabled,
                    self.progress,
                    deps,
                    self.inbox if s.bots.inbox else None,
                    self.chats,
                    self._webhook_setup(),
                )
                store = BroadcastStore(pool, s.database.timeout_s)
                self.broadcaster = Broadcaster(store, self.fleet.handles, lambda: self.settings)
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
            await stop_services(services, self._log)
        self._log.info("worker.stopped")

    def _report_stuck_drain(self) -> None:
        """A drain past its grace: name the tasks still pending and where each waits (a
        cancellation swallowed somewhere would keep the timeout above from firing)."""
        stuck = where_tasks_wait(asyncio.all_tasks())
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
