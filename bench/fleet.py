#!/usr/bin/env python3
"""botvisor fleet benchmark: start-up, idle memory, echo throughput, latency.

For each N in --bots (plus a tiny N0 run for the incremental memory per bot), in
one invocation: a fresh emulator process, a fresh PostgreSQL database
botvisor_bench_<hex> (dropped after) and Redis prefix, N echo bots registered,
then the daemon (`python -m supervisor.cli.main run`, W workers) started and measured:

  all-poll / READY  seconds from daemon start until all N bots sent a getUpdates
                    (emulator, checked every 50 ms) / until READY=1 on NOTIFY_SOCKET
  idle memory       RSS (and USS) of master + workers once all poll and 3 s passed;
                    KiB/bot = (RSS(N) - RSS(N0)) / (N - N0)
  throughput        1,000 messages kept in flight over all bots and many chats for
                    10 s: replies/s, master+worker CPU s per 1,000 replies
  latency           inject -> reply p50/p99 at 0.5 x that throughput

Limits: the emulator enforces Telegram's per-chat (1/s) and per-group limits and
traffic is spread so they never bind (each chat gets < 1 msg/s). The per-bot limit
(30/s) is lifted on both sides by default (emulator 100k/s, botvisor
ratelimit.per_bot 100000/s), otherwise 100 bots would cap throughput at ~2,900/s;
--keep-bot-limit keeps it. botvisor's limiter still runs on every send.

    .venv/bin/python bench/fleet.py --bots 100,1000 --workers 2
    .venv/bin/python bench/fleet.py --bots 1000 --py-spy bench/out/prof   # profile workers
    .venv/bin/python bench/fleet.py --bots 5000 --n0 0 --gc-whatif freeze+thr  # GC what-if

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    OUT_DIR,
    Children,
    EmulatorLimits,
    NotifySocket,
    Phases,
    Sut,
    drop_redis_prefix,
    free_port,
    gc_probe_env,
    idle_memory,
    machine,
    measure_traffic,
    open_log,
    parse_sizes,
    profile_pids,
    read_gc_probe,
    redis_cpu_seconds,
    run_main,
    say,
    scratch_database,
    start_emulator,
    stop_emulator,
    wait_all_polling,
    wait_all_webhooks,
)

from bots.telegram.token import BotToken  # noqa: E402
from config import Settings  # noqa: E402
from emulators.telegram.control import EmulatorControl  # noqa: E402
from supervisor.registry.bot_records import BotMode  # noqa: E402
from supervisor.services import open_registry  # noqa: E402


@dataclass(frozen=True)
class BotvisorOptions:
    workers: int = 2
    redis_url: str = "redis://127.0.0.1:6379/0"
    pg_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    keep_bot_limit: bool = False
    py_spy: Path | None = None
    py_spy_seconds: float = 8.0
    #: log GC pauses of daemon and emulator processes (bench/gcprobe)
    gc_probe: bool = False
    #: GC what-if for the workers: none | thr | freeze | freeze+thr (implies gc_probe)
    gc_whatif: str = "none"
    #: the bots' handler: "echo", or a reference such as "bridge_echo:router" (bench/)
    handler: str = "echo"
    #: handlers.paths of the daemon
    handler_paths: tuple[str, ...] = ()
    #: how the bots get updates: "polling", or "webhook" (the master's ingress, fed by the
    #: emulator's webhook delivery; bench/webhook.py)
    mode: str = "polling"
    #: webhook.max_connections (per bot, as Telegram opens them)
    webhook_max_connections: int = 40
    #: a second figure charged to the run besides the SUT's CPU: Redis's (INFO cpu)
    redis_cpu: bool = False

    def emulator_limits(self) -> EmulatorLimits:
        return EmulatorLimits(per_bot="30/1") if self.keep_bot_limit else EmulatorLimits()


async def _status(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/v1/status", timeout=aiohttp.ClientTimeout(total=10)) as r:
        data: dict[str, Any] = await r.json(loads=orjson.loads)
        return data


async def run_botvisor(
    n: int, opts: BotvisorOptions, ph: Phases, children: Children
) -> dict[str, Any]:
    """One complete run with N bots: its own emulator, database, Redis prefix, daemon."""
    tag = f"botvisor-{n}-{secrets.token_hex(3)}"
    log_dir = OUT_DIR / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}"
    os.makedirs(log_dir, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="bvbench-"))
    prefix = f"botvisor-bench-{secrets.token_hex(4)}:"
    result: dict[str, Any] = {
        "sut": "botvisor",
        "bots": n,
        "workers": opts.workers,
        "handler": opts.handler,
        "traffic": ph.traffic,
        "logs": str(log_dir),
    }
    say(f"botvisor: {n} bots, {opts.workers} workers")
    probe = opts.gc_probe or opts.gc_whatif != "none"
    emu = await start_emulator(
        children,
        opts.emulator_limits(),
        log_dir / "emulator.log",
        env=gc_probe_env(log_dir) if probe else None,
    )
    try:
        async with (
            scratch_database(opts.pg_admin_dsn) as dsn,
            EmulatorControl(emu.base_url, timeout=60) as ctl,
            aiohttp.ClientSession() as http,
        ):
            bots = await ctl.create_bots(n)
            settings = Settings.model_validate(
                {
                    "database": {"url": dsn},
                    "redis": {"url": opts.redis_url, "prefix": prefix},
                    "state": {"dir": str(state_dir)},
                }
            )
            t = time.perf_counter()
            async with open_registry(settings) as registry:
                await registry.add_many(
                    [(BotToken(b.token), b.username) for b in bots], handler=opts.handler
                )
                if opts.mode == "webhook":
                    for b in bots:  # each gets its own sealed secret_token
                        await registry.update(b.id, mode=BotMode.WEBHOOK)
            result["register_s"] = round(time.perf_counter() - t, 2)
            result["mode"] = opts.mode

            http_port = free_port()
            notify = NotifySocket(state_dir / "notify.sock")
            base_env = gc_probe_env(log_dir, opts.gc_whatif) if probe else dict(os.environ)
            env = {k: v for k, v in base_env.items() if not k.startswith("BOTVISOR_")}
            env.update(
                {
                    "BOTVISOR_REDIS__URL": opts.redis_url,
                    "BOTVISOR_REDIS__PREFIX": prefix,
                    "BOTVISOR_DATABASE__URL": dsn,
                    "BOTVISOR_TELEGRAM__API_BASE": emu.base_url,
                    "BOTVISOR_HTTP__HOST": "127.0.0.1",
                    "BOTVISOR_HTTP__PORT": str(http_port),
                    "BOTVISOR_WORKERS__COUNT": str(opts.workers),
                    "BOTVISOR_STATE__DIR": str(state_dir),
                    "BOTVISOR_LOG__FORMAT": "json",
                    "NOTIFY_SOCKET": str(notify.path),
                }
            )
            if not opts.keep_bot_limit:
                env["BOTVISOR_RATELIMIT__PER_BOT__LIMIT"] = "100000"
            if opts.handler_paths:
                env["BOTVISOR_HANDLERS__PATHS"] = os.pathsep.join(opts.handler_paths)
            if opts.mode == "webhook":
                hook_port = free_port()
                env["BOTVISOR_WEBHOOK__PUBLIC_URL"] = f"http://127.0.0.1:{hook_port}"
                env["BOTVISOR_WEBHOOK__PORT"] = str(hook_port)
                env["BOTVISOR_WEBHOOK__MAX_CONNECTIONS"] = str(opts.webhook_max_connections)
            status_url = f"http://127.0.0.1:{http_port}"
            t0_emu = await ctl.now()
            with open_log(log_dir / "daemon.log") as log_file:
                start = time.perf_counter()
                daemon = await children.start(
                    sys.executable,
                    "-m",
                    "supervisor.cli.main",
                    "run",
                    env=env,
                    stdout=log_file,
                    stderr=log_file,
                )
            try:
                timeout = ph.startup_timeout(n)

                async def ready() -> float:
                    await notify.wait_for("READY=1", timeout)
                    return time.perf_counter() - start

                async def polling() -> float:
                    if opts.mode == "webhook":  # every bot's webhook set instead
                        await wait_all_webhooks(ctl, n, timeout)
                    else:
                        await wait_all_polling(ctl, t0_emu, n, timeout)
                    return time.perf_counter() - start

                died = asyncio.create_task(daemon.wait())
                waits = asyncio.gather(ready(), polling())
                racers: set[asyncio.Future[Any]] = {died, waits}
                done, _ = await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
                if died in done:
                    waits.cancel()
                    await asyncio.gather(waits, return_exceptions=True)
                    raise RuntimeError(
                        f"daemon exited with {daemon.returncode} during start-up; "
                        f"see {log_dir / 'daemon.log'}"
                    )
                died.cancel()
                ready_s, poll_s = waits.result()
                result["ready_s"] = round(ready_s, 2)
                result["all_polling_s"] = round(poll_s, 2)
                say(f"  all {n} polling after {poll_s:.2f} s, READY=1 after {ready_s:.2f} s")

                status = await _status(http, status_url)
                worker_pids = [int(w["pid"]) for w in status["workers"] if w.get("pid")]
                children.orphans[daemon.pid] = set(worker_pids)
                sut = Sut([daemon.pid, *worker_pids])
                result["pids"] = sut.pids
                result["idle"] = await idle_memory(sut, ph.settle_s)
                say(
                    f"  idle RSS {result['idle']['rss_mib']} MiB, "
                    f"USS {result['idle']['uss_mib']} MiB ({len(sut.pids)} processes)"
                )

                if ph.traffic:
                    during: Callable[[], Coroutine[Any, Any, None]] | None = None
                    if opts.py_spy is not None:
                        # the master too in webhook mode: it runs the ingress
                        hooked = opts.mode == "webhook"
                        during = functools.partial(
                            profile_pids,
                            children,
                            [*worker_pids, daemon.pid] if hooked else worker_pids,
                            opts.py_spy / tag,
                            min(opts.py_spy_seconds, ph.seconds),
                            [f"worker{i}" for i in range(len(worker_pids))]
                            + (["master"] if hooked else []),
                        )
                    extra = None
                    if opts.redis_cpu:
                        extra = functools.partial(redis_cpu_seconds, opts.redis_url)
                    result.update(
                        await measure_traffic(
                            ctl, [b.id for b in bots], sut, emu.proc.pid, ph, during, extra
                        )
                    )
                    status = await _status(http, status_url)
                    result["daemon"] = {
                        "worker_restarts": status["worker_restarts"],
                        "totals": _sum_totals(status["workers"]),
                        "bots_by_state": status.get("bots_by_state"),
                    }
                    if not sut.alive():
                        result["error"] = "a daemon process died during the run"
            finally:
                notify.close()
                code = await children.stop(daemon, grace_s=60)
                result["daemon_exit"] = code
    except Exception as exc:  # noqa: BLE001 - keep the other sizes running; error in the result
        result["error"] = f"{type(exc).__name__}: {exc}"
        say(f"  ERROR: {result['error']}")
    finally:
        await stop_emulator(children, emu)
        if probe:
            result["gc"] = read_gc_probe(log_dir)
            for g in result["gc"]:
                say(
                    f"  GC {' '.join(g['argv'][:2])} (what-if {g['whatif']}): "
                    + ", ".join(
                        f"{k} n={v['n']} total {v['total_ms']:.0f} ms max {v['max_ms']:.0f} ms"
                        for k, v in g["collections"].items()
                    )
                )
        with contextlib.suppress(Exception):
            await drop_redis_prefix(opts.redis_url, prefix)
        shutil.rmtree(state_dir, ignore_errors=True)
    return result


def _sum_totals(workers: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in workers:
        for k, v in (w.get("totals") or {}).items():
            out[k] = out.get(k, 0) + int(v)
    return out


def add_args(p: argparse.ArgumentParser) -> None:
    """Options shared with run_all.py."""
    p.add_argument("--workers", type=int, default=2, help="botvisor worker processes (default 2)")
    p.add_argument(
        "--n0",
        type=int,
        default=10,
        help="bots in the small run that RSS per bot is measured against (default 10; 0 skips it)",
    )
    p.add_argument(
        "--inflight",
        type=int,
        default=1000,
        help="messages kept in flight in the throughput phase (default 1000)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="throughput window (default 10)")
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=10.0,
        help="length of the fixed-rate latency phase (default 10)",
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=40_000,
        help="distinct (bot, chat) pairs the traffic cycles through (default 40000)",
    )
    p.add_argument(
        "--keep-bot-limit",
        action="store_true",
        help="keep Telegram's 30 msg/s per-bot limit (caps small fleets)",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument(
        "--pg-admin-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database to run CREATE/DROP DATABASE from",
    )


def phases_from(args: argparse.Namespace) -> Phases:
    return Phases(
        inflight=args.inflight,
        seconds=args.seconds,
        latency_s=args.latency_seconds,
        pairs=args.pairs,
    )


def per_bot(results: list[dict[str, Any]]) -> None:
    """Incremental memory per bot of each run against the same SUT's N0 run (in place)."""
    base = {(r["sut"], r.get("rep", 0)): r for r in results if not r.get("traffic") and "idle" in r}
    for r in results:
        b = base.get((r["sut"], r.get("rep", 0)))
        if b is None or r is b or "idle" not in r or r["bots"] <= b["bots"]:
            continue
        dn = r["bots"] - b["bots"]
        r["rss_kib_per_bot"] = round((r["idle"]["rss_mib"] - b["idle"]["rss_mib"]) * 1024 / dn, 2)
        if r["idle"]["uss_mib"] is not None and b["idle"]["uss_mib"] is not None:
            r["uss_kib_per_bot"] = round(
                (r["idle"]["uss_mib"] - b["idle"]["uss_mib"]) * 1024 / dn, 2
            )
        r["n0"] = b["bots"]


def _cell(v: Any, fmt: str = "") -> str:
    if v is None:
        return "-"
    return format(v, fmt) if fmt else str(v)


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'sut':<9}{'bots':>6}{'poll s':>8}{'READY s':>8}{'RSS MiB':>9}{'KiB/bot':>8}"
        f"{'USS/bot':>8}{'repl/s':>8}{'CPU/1k':>7}{'gU/r':>5}{'SUT%':>6}{'emu%':>6}"
        f"{'@rate':>7}{'p50 ms':>8}{'p99 ms':>8}{'lost':>6}{'429':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        idle = r.get("idle") or {}
        thr = r.get("throughput") or {}
        lat = r.get("latency") or {}
        lost = (thr.get("lost") or 0) + (lat.get("lost") or 0) if thr else None
        t429 = (thr.get("telegram_429") or 0) + (lat.get("telegram_429") or 0) if thr else None
        lines.append(
            f"{r['sut']:<9}{r['bots']:>6}{_cell(r.get('all_polling_s'), '.2f'):>8}"
            f"{_cell(r.get('ready_s'), '.2f'):>8}{_cell(idle.get('rss_mib'), '.1f'):>9}"
            f"{_cell(r.get('rss_kib_per_bot'), '.1f'):>8}{_cell(r.get('uss_kib_per_bot'), '.1f'):>8}"
            f"{_cell(thr.get('replies_per_s'), '.0f'):>8}{_cell(thr.get('cpu_s_per_1k'), '.3f'):>7}"
            f"{_cell(thr.get('get_updates_per_reply'), '.1f'):>5}"
            f"{_cell(thr.get('sut_cpu_pct'), '.0f'):>6}{_cell(thr.get('emulator_cpu_pct'), '.0f'):>6}"
            f"{_cell(lat.get('rate'), '.0f'):>7}{_cell(lat.get('p50_ms'), '.1f'):>8}"
            f"{_cell(lat.get('p99_ms'), '.1f'):>8}{_cell(lost):>6}{_cell(t429):>5}"
            + (f"  ERROR {r['error']}" if r.get("error") else "")
        )
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    opts = BotvisorOptions(
        workers=args.workers,
        redis_url=args.redis_url,
        pg_admin_dsn=args.pg_admin_dsn,
        keep_bot_limit=args.keep_bot_limit,
        py_spy=args.py_spy,
        gc_probe=args.gc_probe,
        gc_whatif=args.gc_whatif,
    )
    ph = phases_from(args)
    info = machine()
    children = Children()
    results: list[dict[str, Any]] = []
    try:
        if args.n0 > 0:
            results.append(await run_botvisor(args.n0, opts, Phases(traffic=False), children))
        for n in args.bots:
            results.append(await run_botvisor(n, opts, ph, children))
            per_bot(results)
            say(table(results))
    finally:
        await children.stop_all()
    print(table(results))
    print(orjson.dumps({"bench": "fleet", "machine": info, "results": results}).decode())
    return 1 if any(r.get("error") for r in results) else 0


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument(
        "--bots",
        type=parse_sizes,
        default=[100, 1000, 5000],
        help="comma-separated fleet sizes (default 100,1000,5000)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="record each worker with py-spy during the throughput window "
        "(distorts the numbers: profile in a separate invocation)",
    )
    p.add_argument(
        "--gc-probe",
        action="store_true",
        help="log every GC pause of the daemon's and the emulator's processes "
        "(bench/gcprobe/sitecustomize.py on their PYTHONPATH)",
    )
    p.add_argument(
        "--gc-whatif",
        choices=["none", "thr", "freeze", "freeze+thr"],
        default="none",
        help="what-if for the workers (implies --gc-probe): thresholds (50000, 20, 100), "
        "gc.freeze() 12 s after start, or both; no project code is changed",
    )
    add_args(p)
    args = p.parse_args()
    raise SystemExit(run_main(lambda: _main(args)))


if __name__ == "__main__":
    main()
