"""The admin's page: workers, Redis/PostgreSQL health, per-owner totals, the fleet's rates.

Runs in the master's event loop. Only a session of the admin key sees it; an owner gets
the 404 page, as for any page that is not theirs. Worker figures come from the master's
own heartbeat slots (no extra I/O); memory is read from /proc in a thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Final

import structlog
from aiohttp import web

from supervisor.http.dashboard.live import LiveFigures
from supervisor.http.dashboard.pages import OUTAGES, PAGES_KEY, Pages
from supervisor.http.dashboard.sessions import Session
from supervisor.master.arbiter import Master

log = structlog.get_logger(__name__)

MASTER_KEY: Final = web.AppKey("dashboard_master", Master)
FLEET_LIVE_KEY: Final = web.AppKey("dashboard_fleet_live", LiveFigures)
_PROBE_TIMEOUT_S: Final = 2.0
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes(pids: list[int]) -> dict[int, int]:
    """Resident memory per pid from /proc (Linux); a pid that is gone is left out."""
    out: dict[int, int] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as f:
                out[pid] = int(f.read().split()[1]) * _PAGE_SIZE
        except (OSError, ValueError, IndexError):
            continue
    return out


async def _workers(master: Master) -> list[dict[str, Any]]:
    now = time.monotonic()
    pids = [s.pid for s in master.slots if s.pid is not None]
    rss = await asyncio.to_thread(_rss_bytes, pids)
    rows = []
    for slot in master.slots:
        hb, pid = slot.heartbeat, slot.pid
        rows.append(
            {
                "index": slot.index,
                "pid": pid,
                "state": "down" if pid is None else (hb.state if hb else "starting"),
                "bots_running": hb.running if hb else 0,
                "bots_desired": hb.desired if hb else 0,
                "loop_lag_ms": round(hb.loop_lag_s * 1000, 1) if hb else None,
                "restarts": slot.restarts,
                "rss_mib": round(rss[pid] / 2**20, 1) if pid in rss else None,
                "heartbeat_age_s": round(now - slot.heartbeat_seen, 1) if hb else None,
                "received_per_s": hb.rates.get("received_per_s", 0.0) if hb else 0.0,
                "sent_per_s": hb.rates.get("sent_per_s", 0.0) if hb else 0.0,
                "telegram_429": hb.totals.get("telegram_429", 0) if hb else 0,
                "health": dict(hb.health) if hb else {},
            }
        )
    return rows


async def _probe(pages: Pages) -> dict[str, dict[str, Any]]:
    """Round trips to Redis and PostgreSQL, each within 2 s."""
    ctx = pages.ctx
    out: dict[str, dict[str, Any]] = {}
    for name, call in (
        ("redis", (lambda: ctx.redis.ping()) if ctx.redis is not None else None),  # type: ignore[union-attr]
        ("postgresql", ctx.registry.counts_by_state),
    ):
        if call is None:
            out[name] = {"ok": False, "detail": "not connected from the master"}
            continue
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                await call()
        except OUTAGES as exc:
            out[name] = {"ok": False, "detail": type(exc).__name__}
            continue
        out[name] = {"ok": True, "detail": f"{(time.perf_counter() - t0) * 1000:.1f} ms"}
    return out


async def _owners(pages: Pages, live: LiveFigures) -> list[dict[str, Any]]:
    registry = pages.ctx.registry
    owners, counts, owner_of = await asyncio.gather(
        registry.owners(), registry.counts_by_owner(), registry.owner_of_bots()
    )
    rates: dict[int | None, list[float]] = {}
    for bot_id, (rin, rout) in live.per_minute_by_bot().items():
        r = rates.setdefault(owner_of.get(bot_id), [0.0, 0.0])
        r[0] += rin
        r[1] += rout
    names: dict[int | None, str] = {o.id: o.name for o in owners}
    names.setdefault(None, "(admin's own)")
    rows = []
    for owner_id in sorted(set(names) | set(counts), key=lambda o: (o is not None, o or 0)):
        by_state = counts.get(owner_id, {})
        if owner_id is None and not by_state:
            continue
        rin, rout = rates.get(owner_id, [0.0, 0.0])
        rows.append(
            {
                "name": names.get(owner_id, f"owner {owner_id}"),
                "bots": sum(by_state.values()),
                "by_state": by_state,
                "in_per_min": round(rin, 1),
                "out_per_min": round(rout, 1),
            }
        )
    return rows


def _admin_only(session: Session) -> None:
    if not session.caller.admin:
        raise web.HTTPNotFound()


async def fleet_page(request: web.Request, session: Session) -> web.StreamResponse:
    _admin_only(session)
    pages = request.app[PAGES_KEY]
    live = request.app[FLEET_LIVE_KEY]
    master = request.app[MASTER_KEY]
    workers, health, owners = await asyncio.gather(
        _workers(master), _probe(pages), _owners(pages, live)
    )
    return pages.render(
        request,
        "fleet.html",
        session,
        workers=workers,
        health=health,
        owners=owners,
        fleet=live.fleet(),
        worker_restarts=master.worker_restarts,
        uptime_s=round(time.monotonic() - master.started),
    )


async def live_fleet(request: web.Request, session: Session) -> web.StreamResponse:
    _admin_only(session)
    master = request.app[MASTER_KEY]
    fleet = request.app[FLEET_LIVE_KEY].fleet()
    return web.json_response({"workers": await _workers(master), "fleet": fleet})
