"""The master's HTTP endpoints: health, readiness, metrics for the whole host, status."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from supervisor.http.admin_api import add_admin_routes
from supervisor.http.broadcasts_api import BROADCAST_OPERATIONS
from supervisor.http.common import AdminContext, json_errors
from supervisor.http.upgrade_api import UPGRADE_KEY, UPGRADE_OPERATIONS
from supervisor.master.arbiter import Master
from supervisor.registry import leases
from supervisor.registry.bots import Registry

MASTER_KEY: web.AppKey[Master] = web.AppKey("master", Master)
REGISTRY_KEY: web.AppKey[Registry | None] = web.AppKey("registry", Registry)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)


async def healthz(request: web.Request) -> web.Response:
    """200 while the master's loop answers at all."""
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, reason = request.app[MASTER_KEY].readiness()
    return _json({"ready": ready, "reason": reason}, 200 if ready else 503)


async def metrics_view(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    from supervisor.metrics import render

    # reads every worker's mmap files
    body = await asyncio.to_thread(render, request.app[MASTER_KEY].host)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    master = request.app[MASTER_KEY]
    registry = request.app[REGISTRY_KEY]
    counts: dict[str, int] | None = None
    registry_error = None
    hosts: list[dict[str, Any]] | None = None
    if registry is not None:
        try:
            counts = await registry.counts_by_state()
            s = master.settings
            cluster = await leases.hosts(registry.pool, s.leases.ttl_s, s.database.timeout_s)
            hosts = [leases.as_dict(h) for h in cluster]
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            registry_error = type(exc).__name__
    now = time.monotonic()
    workers = []
    for slot in master.slots:
        hb = slot.heartbeat
        workers.append(
            {
                "index": slot.index,
                "pid": slot.pid,
                "state": "down" if slot.pid is None else (hb.state if hb else "starting"),
                "shards": hb.shards if hb else [],
                "bots_running": hb.running if hb else 0,
                "bots_desired": hb.desired if hb else 0,
                "bots": hb.bots if hb else {},
                "loop_lag_ms": round(hb.loop_lag_s * 1000, 2) if hb else None,
                "heartbeat_age_s": round(now - slot.heartbeat_seen, 2) if hb else None,
                "totals": hb.totals if hb else {},
                "p50_ms": hb.p50_ms if hb else None,
                "p99_ms": hb.p99_ms if hb else None,
                "health": hb.health if hb else {},
            }
        )
    ready, reason = master.readiness()
    return _json(
        {
            "host": master.host,
            "shards": sorted(master.owned) if master.owned is not None else None,
            "ready": ready,
            "reason": reason,
            "uptime_s": round(now - master.started, 1),
            "worker_restarts": master.worker_restarts,
            "standby_pid": master.standby.proc.pid if master.standby is not None else None,
            "workers": workers,
            "bots_by_state": counts,
            "hosts": hosts,
            "registry_error": registry_error,
        }
    )


def make_app(
    master: Master, registry: Registry | None, admin: AdminContext | None = None
) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[MASTER_KEY] = master
    app[REGISTRY_KEY] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/v1/status", status)
    if admin is not None:
        app[UPGRADE_KEY] = master.upgrade
        from supervisor.http.owner_api import OWNER_OPERATIONS

        # /v1/bots… (supervisor/http/bots_api.py, chats_api.py), /v1/openapi.json
        # (supervisor/http/admin_api.py), broadcasts, owners, audit, /v1/upgrade (upgrade_api.py)
        add_admin_routes(app, admin, BROADCAST_OPERATIONS + OWNER_OPERATIONS + UPGRADE_OPERATIONS)
        if admin.settings.dashboard.enabled:
            from supervisor.http.dashboard import mount_dashboard
            from supervisor.http.dashboard.extensions import EXTENSIONS

            mount_dashboard(app, admin, master, EXTENSIONS)  # /ui… (supervisor/http/dashboard/)
    return app
