#!/usr/bin/env python3
"""The dashboard's bots page with 10,000 bots: median and p99 response time.

The master's real aiohttp app (admin API + dashboard, `supervisor/http/app.py`) on a
TCP port in this process, against a fresh PostgreSQL database holding N bots of one
owner. Workers are emulated: W fake workers send a heartbeat each second with per-bot
figures for their share of the N bots (the `per_bot` field real workers send), folded by
the dashboard as in the master. A client logged in as the owner then fetches:

  bots page      GET /ui/bots?page=P         (random pages of 50; the target)
  search         GET /ui/bots?q=…            (part of a username)
  live figures   GET /ui/live/bots?ids=…     (the 50 bots of a page, what the JS polls)
  admin fleet    GET /ui/fleet               (as the admin: workers, owners, health)
  baselines      GET /healthz, GET /v1/bots  (the API's full list of N bots)

and, without services, what one worker's heartbeat with N per-bot entries costs to build
and encode (worker) and to decode (master).

Requests are sequential; the client shares the process (and core) with the server, so
these times are upper bounds.

    .venv/bin/python bench/dashboard.py --bots 10000 --requests 300

Target: bots page p99 <= 200 ms. Writes bench/out/dashboard-<time>.json; the last line
of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    ROOT,
    drop_redis_prefix,
    free_port,
    machine,
    run_main,
    say,
    scratch_database,
    write_json,
)

sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from bots.actor.state import ActorState  # noqa: E402
from bots.telegram.token import BotToken  # noqa: E402
from config import Settings  # noqa: E402
from ipc.heartbeat import Heartbeat  # noqa: E402
from ipc.redis_client import redis_client  # noqa: E402
from supervisor.http.app import make_app  # noqa: E402
from supervisor.http.common import AdminContext  # noqa: E402
from supervisor.master.arbiter import Master  # noqa: E402
from supervisor.registry.owners import create_owner  # noqa: E402
from supervisor.services import open_registry  # noqa: E402

TARGET_P99_MS = 200.0
_CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_pct(ms, 0.5), 2), "p99_ms": round(_pct(ms, 0.99), 2)}


async def _fake_workers(
    master: Master, bot_ids: list[int], workers: int, fold_ms: list[float]
) -> None:
    """Heartbeats with per-bot figures, once a second per worker, until cancelled. Built
    once (a real worker builds them in its own process); folding them is the master's
    cost and is timed into `fold_ms`."""
    now = time.time()
    beats = [
        Heartbeat(
            index=w,
            state="ready",
            at=now,
            per_bot={
                str(b): ["running", random.randint(0, 3), random.randint(0, 3), 0, 0, now]
                for b in bot_ids[w::workers]
            },
        )
        for w in range(workers)
    ]
    while True:
        for w, hb in enumerate(beats):
            t0 = time.perf_counter()
            for listener in master.beat_listeners:
                listener(w, hb)
            fold_ms.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(1.0)


class _Handle:
    state = ActorState.RUNNING


def _heartbeat_costs(bots: int, rounds: int = 20) -> dict[str, Any]:
    """A worker's per-bot heartbeat at `bots` bots (30% with traffic): building and
    encoding it (worker), decoding it (master). Pure CPU, no services."""
    from supervisor.worker.bot_figures import BotFigures

    handles: dict[int, Any] = {7_000_000_000 + i: _Handle() for i in range(bots)}
    figures = BotFigures()
    build: list[float] = []
    decode: list[float] = []
    raw = b""
    for _ in range(rounds):
        for bot_id in list(handles)[: bots * 3 // 10]:
            figures.record(bot_id, 1, 1, 0, 0)
        t0 = time.perf_counter()
        busy, idle, _ = figures.snapshot(handles, bots)  # type: ignore[arg-type]
        raw = Heartbeat(per_bot=busy, per_bot_idle=idle).dumps()
        t1 = time.perf_counter()
        Heartbeat.loads(raw)
        decode.append((time.perf_counter() - t1) * 1000)
        build.append((t1 - t0) * 1000)
    return {
        "bots": bots,
        "bytes": len(raw),
        "worker_build_encode": _summary(build),
        "master_decode": _summary(decode),
    }


async def _login(http: aiohttp.ClientSession, base: str, key: str) -> None:
    async with http.get(base + "/ui/login") as resp:
        token = _CSRF.search(await resp.text())
    assert token is not None
    async with http.post(
        base + "/ui/login", data={"_csrf": token.group(1), "key": key}, allow_redirects=False
    ) as resp:
        if resp.status != 303:
            raise RuntimeError(f"login: {resp.status}")


async def _time(http: aiohttp.ClientSession, url: str, n: int, **headers: str) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with http.get(url, headers=headers, allow_redirects=False) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {url}: {resp.status}")
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    admin_key = secrets.token_urlsafe(32)
    prefix = f"botvisor-bench-{secrets.token_hex(4)}:"
    state_dir = Path(tempfile.mkdtemp(prefix="bvdash-"))
    results: dict[str, Any] = {}
    try:
        async with scratch_database(args.pg_admin_dsn) as dsn:
            settings = Settings.model_validate(
                {
                    "database": {"url": dsn},
                    "redis": {"url": args.redis_url, "prefix": prefix},
                    "state": {"dir": str(state_dir / "state")},
                    "security": {"admin_key": admin_key},
                }
            )
            async with (
                open_registry(settings) as registry,
                aiohttp.ClientSession() as session,
                contextlib.aclosing(redis_client(args.redis_url, 5.0, 8)) as redis,
            ):
                owner, key = await create_owner(registry, "bench")
                items = [
                    (BotToken(f"{7_000_000_000 + i}:{secrets.token_urlsafe(26)}"), f"bench_{i}_bot")
                    for i in range(args.bots)
                ]
                await registry.add_many(items)
                bot_ids = [t.bot_id for t, _ in items]
                conn = await asyncpg.connect(dsn, timeout=10)  # add_many sets no owner
                try:
                    await conn.execute("UPDATE bots SET owner_id = $1", owner.id, timeout=60)
                finally:
                    await conn.close(timeout=5)
                say(f"{args.bots} bots of one owner registered")
                master = Master(settings)
                app = make_app(
                    master, registry, AdminContext(registry, settings, session, None, redis)
                )
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                port = free_port()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                base = f"http://127.0.0.1:{port}"
                fold_ms: list[float] = []
                beats = asyncio.create_task(_fake_workers(master, bot_ids, args.workers, fold_ms))
                try:
                    await asyncio.sleep(1.5)  # two rounds of heartbeats folded
                    jar = aiohttp.CookieJar(unsafe=True)
                    async with aiohttp.ClientSession(cookie_jar=jar) as http:
                        await _login(http, base, key)
                        n = args.requests
                        pages = max(1, args.bots // 50)
                        for url in (base + "/ui/bots", base + "/healthz"):  # warm up
                            await _time(http, url, 5)
                        page_ms: list[float] = []
                        for _ in range(n):
                            p = random.randint(1, pages)
                            page_ms += await _time(http, f"{base}/ui/bots?page={p}", 1)
                        results["bots_page"] = _summary(page_ms)
                        results["search"] = _summary(
                            await _time(http, base + "/ui/bots?q=_77", n // 3)
                        )
                        ids = ",".join(str(b) for b in bot_ids[500:550])
                        results["live_figures"] = _summary(
                            await _time(http, f"{base}/ui/live/bots?ids={ids}", n // 3)
                        )
                        results["healthz_baseline"] = _summary(
                            await _time(http, base + "/healthz", n)
                        )
                        auth = {"Authorization": f"Bearer {key}"}
                        results["api_list_baseline"] = _summary(
                            await _time(http, base + "/v1/bots", max(5, n // 10), **auth)
                        )
                    jar = aiohttp.CookieJar(unsafe=True)
                    async with aiohttp.ClientSession(cookie_jar=jar) as http:
                        await _login(http, base, admin_key)
                        results["admin_fleet"] = _summary(
                            await _time(http, base + "/ui/fleet", max(5, n // 10))
                        )
                finally:
                    beats.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beats
                    await runner.cleanup()
    finally:
        await drop_redis_prefix(args.redis_url, prefix)
        shutil.rmtree(state_dir, ignore_errors=True)
    results["heartbeat_fold"] = _summary(fold_ms)
    results["heartbeat_per_bot"] = _heartbeat_costs(args.bots)
    met = results["bots_page"]["p99_ms"] <= TARGET_P99_MS
    return {
        "bench": "dashboard",
        "bots": args.bots,
        "fake_workers": args.workers,
        "requests": args.requests,
        "machine": machine(),
        **results,
        "target_p99_ms": TARGET_P99_MS,
        "met": met,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bots", type=int, default=10_000, help="bots of the one owner")
    p.add_argument("--workers", type=int, default=2, help="emulated workers sending heartbeats")
    p.add_argument("--requests", type=int, default=300, help="bots-page requests")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()

    async def go() -> int:
        import orjson

        result = await measure(args)
        path = write_json("dashboard", result)
        b = result["bots_page"]
        say(
            f"bots page of {args.bots} bots: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms "
            f"(target p99 <= {TARGET_P99_MS:g} ms: {'met' if result['met'] else 'MISSED'}); "
            f"{path}"
        )
        print(orjson.dumps(result).decode())
        return 0 if result["met"] else 1

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
