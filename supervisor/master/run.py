"""`botvisor run` and `botvisor migrate`: set up services, then hand over to the Master."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog
from aiohttp import web

from bots.telegram.sessions import open_bot_api_session
from bots.telegram.webhook_ingress import RESULTS, WebhookIngress
from bots.telegram.webhook_server import IngressServer
from config import Settings, load_settings
from context import open_context_store
from ipc.messages import Drain
from ipc.redis_client import redis_client
from supervisor.embedded.base import state_dir_mode
from supervisor.exitcodes import ExitCode
from supervisor.failures import OperatorError
from supervisor.master.arbiter import Master
from supervisor.master.events import HaltMaster
from supervisor.master.housekeeping import open_housekeeping
from supervisor.master.leases import LeaseKeeper
from supervisor.registry.bots import Registry
from supervisor.registry.leases import ShardCountMismatch
from supervisor.registry.master_lock import AlreadyRunning, hold_master_lock
from supervisor.registry.tokenbox import open_tokenbox
from supervisor.services import open_registry, open_services

log = structlog.get_logger(__name__)


def pidfile(settings: Settings) -> Path:
    return Path(settings.state.dir).absolute() / "master.pid"


def already_running(exc: AlreadyRunning) -> OperatorError:
    h = exc.holder
    who = (
        f"pid {h.pid} on host {h.host}, HTTP {h.http}, since {h.started_at:%Y-%m-%d %H:%M:%S %Z}"
        if h is not None
        else f"host {exc.host}, starting"
    )
    return OperatorError(
        f"another botvisor master already runs with host.id {exc.host!r}: {who}",
        "stop it first (`systemctl stop botvisor` or kill that pid); one master per host "
        "id and database (other machines need host ids of their own)",
        ExitCode.ALREADY_RUNNING,
        "host.id",
    )


def shard_count_mismatch(exc: ShardCountMismatch) -> OperatorError:
    return OperatorError(
        f"workers.shards is {exc.configured} but this cluster was created with {exc.stored} shards",
        f"set workers.shards = {exc.stored} (every host of a cluster uses the same count), "
        f"or stop every host and run `botvisor shards migrate --to {exc.configured}`",
        ExitCode.CONFIG,
        "workers.shards",
    )


@contextlib.asynccontextmanager
async def open_leases(live: Settings, redis: Any) -> AsyncIterator[LeaseKeeper]:
    """This host's lease keeper, its first round done (a lone host holds every shard);
    releases every lease at exit, after the workers stopped."""
    keeper = LeaseKeeper(live, redis, f"{live.http.host}:{live.http.port}")
    try:
        await keeper.open()
    except ShardCountMismatch as exc:
        raise shard_count_mismatch(exc) from None
    try:
        await keeper.start()
        yield keeper
    finally:
        await keeper.close()


@contextlib.asynccontextmanager
async def master_lock(live: Settings) -> AsyncIterator[None]:
    assert live.database.url is not None
    http = f"{live.http.host}:{live.http.port}"
    try:
        async with hold_master_lock(
            live.database.url.get_secret_value(),
            live.host.id,
            http,
            live.database.timeout_s,
        ):
            yield
    except AlreadyRunning as exc:
        raise already_running(exc) from None


async def start_http(runner: web.AppRunner, live: Settings) -> int:
    """Bind the HTTP endpoints; a taken address is an OperatorError. Returns the port."""
    from supervisor.http.server import HardenedSite

    site = HardenedSite(
        runner, live.http.host, live.http.port, max_connections=live.http.max_connections
    )
    try:
        await site.start()
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise OperatorError(
            f"cannot listen on {live.http.host}:{live.http.port}: {exc.strerror}",
            "stop what uses that port (`ss -ltnp`) or choose another http.port",
            ExitCode.ADDRESS_IN_USE,
            "http.port",
        ) from None
    return runner.addresses[0][1] if runner.addresses else live.http.port


async def open_ingress(
    live: Settings, registry: Registry, redis: aioredis.Redis
) -> RunningIngress | None:
    """The webhook ingress on `webhook.host:port` when `webhook.public_url` is set."""
    w = live.webhook
    if not w.enabled:
        return None
    from supervisor import metrics

    requests = metrics.metrics().webhook_requests
    counters = {r: requests.labels(r) for r in RESULTS}
    ingress = WebhookIngress(
        redis,
        live.redis.prefix,
        live.workers.shards,
        registry,
        backlog_max=w.backlog_max,
        retry_after_s=w.retry_after_s,
        timeout_s=live.redis.timeout_s,
        max_body=w.max_body,
        on_result=lambda result: counters[result].inc(),
    )
    server = IngressServer(ingress)
    try:
        await server.start(w.host, w.port)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise OperatorError(
            f"cannot listen on {w.host}:{w.port}: {exc.strerror}",
            "stop what uses that port (`ss -ltnp`) or choose another webhook.port",
            ExitCode.ADDRESS_IN_USE,
            "webhook.port",
        ) from None
    task = asyncio.create_task(ingress.run(), name="master:webhook-appender")
    log.info("master.webhook_ingress", host=w.host, port=server.port, public_url=w.public_url)
    return RunningIngress(ingress, server, task, server.port)


@dataclass(slots=True)
class RunningIngress:
    ingress: WebhookIngress
    server: IngressServer
    task: asyncio.Task[None]
    port: int

    async def close(self) -> None:
        # stops taking requests, answers those in flight: an append waits at most the
        # Redis timeout
        await self.server.close(self.ingress.timeout_s + 1.0)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def run_daemon(settings: Settings, config_path: Path | None) -> int:
    """Runs in the master process. Returns the exit status."""
    from supervisor import metrics

    state_dir = Path(settings.state.dir).absolute()
    # keys, sockets and the pid file live here: nobody else lists or reads it
    state_dir.mkdir(mode=state_dir_mode(), parents=True, exist_ok=True)
    metrics_dir = metrics.prepare_dir(state_dir)  # before anything imports prometheus_client
    try:
        return await _serve(settings, config_path)
    finally:
        metrics.remove_dir(metrics_dir)


async def _serve(settings: Settings, config_path: Path | None) -> int:
    async with (
        open_services(settings) as live,
        open_registry(live) as registry,
        master_lock(live),  # before the pid file and the port: a second run touches neither
        open_bot_api_session(live) as session,  # the admin API's getMe checks
        contextlib.aclosing(
            redis_client(live.redis.url or "", live.redis.timeout_s, live.redis.pool_max)
        ) as redis,
        open_context_store(live, redis=redis) as context,  # the admin API's handoff release
        open_housekeeping(live, registry, redis) as chores,  # audit writer, usage sync, pruning
        open_leases(live, redis) as keeper,
    ):
        from supervisor.http.common import AdminContext

        admin = AdminContext(registry, live, session, context, redis, audit=chores.audit)
        embedded = {"redis": live.redis.url, "database": live.database.url}

        def reload_settings() -> Settings:
            new = load_settings(config_path)
            # servers we started ourselves stay the ones in use
            update: dict[str, Any] = {}
            if new.redis.url is None:
                update["redis"] = new.redis.model_copy(update={"url": embedded["redis"]})
            if new.database.url is None:
                update["database"] = new.database.model_copy(update={"url": embedded["database"]})
            new = new.model_copy(update=update)
            registry.use_tokenbox(open_tokenbox(new))  # ConfigError: the master keeps the old
            admin.settings = chores.settings = new
            return new

        master = Master(live, reload_settings, owned=keeper.owned)
        keeper.attach(master)
        from supervisor.http.app import make_app
        from supervisor.http.server import make_runner

        runner = make_runner(
            make_app(master, registry, admin), idle_timeout_s=live.http.idle_timeout_s
        )
        await runner.setup()
        try:
            port = await start_http(runner, live)
        except OperatorError:
            await runner.cleanup()
            raise
        try:
            ingress = await open_ingress(live, registry, redis)
        except OperatorError:
            await runner.cleanup()
            raise
        pidfile(live).write_text(f"{os.getpid()}\n")
        log.info("master.http", host=live.http.host, port=port, workers=live.workers.count)
        # renewals go on through the drain: the shards stay ours until the bots stopped
        renewing = asyncio.create_task(keeper.run(), name="master:leases")
        renewing.add_done_callback(functools.partial(_leases_ended, master))
        try:
            return await master.run()
        except HaltMaster as halt:
            log.error("master.halt", reason=halt.reason, exit_status=halt.exit_status)
            await master.drain()
            return halt.exit_status
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            if ingress is not None:
                await ingress.close()
            await runner.cleanup()
            remove_own_pidfile(live)


def _leases_ended(master: Master, task: asyncio.Task[None]) -> None:
    """The lease keeper never ends on its own: if it died, drain (its shards will lapse)."""
    if task.cancelled():
        return
    log.error("leases.keeper_died", error=repr(task.exception()))
    master.events.put_nowait(Drain())


def remove_own_pidfile(settings: Settings) -> None:
    """Remove master.pid only if it is ours: never another master's."""
    path = pidfile(settings)
    with contextlib.suppress(FileNotFoundError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


async def migrate_only(settings: Settings) -> int:
    async with open_services(settings, redis=False) as live, open_registry(live):
        log.info("migrate.done")
    return ExitCode.OK
