#!/usr/bin/env python3
"""10,000 bots on one host, set up as a new user would, and faults under load.

Default set-up: no Redis/PostgreSQL URLs (the embedded servers start in a fresh state
directory), 2 workers, an emulator process with Telegram's own flood limits. Then:

  import    `botvisor bots import tokens.txt` of N tokens (getMe each), seconds
  start     `botvisor run`: seconds until every bot sent a getUpdates; READY=1
  idle      RSS of master + workers once all poll
  burst     one message to each of the N bots at once: seconds until all answered,
            p50/p99 inject->reply, 409s, 429s, answers sent twice
  kill      SIGKILL the worker holding the most bots once idle, then one message to
            every bot: seconds until its bots poll again, lost, twice, 429
  outage    Telegram answers 502 to everything for --outage-s seconds while one message
            per bot is queued: seconds from the outage's end until all answered
  log       WARNING/ERROR lines of the daemon by event (expected ones named)

    .venv/bin/python bench/scale10k.py --bots 10000
    .venv/bin/python bench/scale10k.py --bots 2000 --outage-s 10   # a quicker look

The last line of output is one JSON object; it is also written to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    ROOT,
    Children,
    EmulatorLimits,
    NotifySocket,
    Sut,
    free_port,
    machine,
    open_log,
    profile_pids,
    run_main,
    say,
    start_emulator,
    stop_emulator,
    write_json,
)

sys.path.insert(0, str(ROOT))
from emulators.telegram.control import EmulatorControl  # noqa: E402

BOTVISOR = str(Path(sys.executable).with_name("botvisor"))
#: events a fault makes on purpose (the master reports the worker it lost)
EXPECTED = {"worker.died"}


def _env(
    api_base: str, port: int, notify: Path | None, workers: int, state_dir: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTVISOR_")}
    env.update(
        BOTVISOR_TELEGRAM__API_BASE=api_base,
        BOTVISOR_HTTP__PORT=str(port),
        BOTVISOR_LOG__FORMAT="json",
        BOTVISOR_WORKERS__COUNT=str(workers),
        BOTVISOR_STATE__DIR=str(state_dir),
    )
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify)
    return env


async def _until(probe: Any, within_s: float, interval: float = 0.05) -> float:
    """Seconds until the async predicate holds (another process: polled)."""
    t0 = time.perf_counter()
    async with asyncio.timeout(within_s):
        while not await probe():  # noqa: ASYNC110 - another process, asked every interval
            await asyncio.sleep(interval)
    return round(time.perf_counter() - t0, 2)


class Watch:
    """Samples /v1/status every 0.25 s: worst loop lag and heartbeat age per phase."""

    def __init__(self, http: str) -> None:
        self.http = http
        self.lag_ms = 0.0
        self.hb_age_s = 0.0

    def take(self) -> dict[str, float]:
        out = {"max_loop_lag_ms": round(self.lag_ms, 1), "max_heartbeat_age_s": self.hb_age_s}
        self.lag_ms = self.hb_age_s = 0.0
        return out

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            while True:
                try:
                    async with s.get(self.http + "/v1/status") as r:
                        data = await r.json()
                    for w in data["workers"]:
                        self.lag_ms = max(self.lag_ms, w.get("loop_lag_ms") or 0.0)
                        self.hb_age_s = max(self.hb_age_s, w.get("heartbeat_age_s") or 0.0)
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                    pass
                await asyncio.sleep(0.25)


async def _burst(
    ctl: EmulatorControl, bot_ids: list[int], chat: int, within_s: float, watch: Watch
) -> dict[str, Any]:
    """One message to every bot at once; seconds until all answered plus the deltas."""
    await ctl.reset_stats()
    watch.take()
    await ctl.inject([{"bot_id": b, "chat_id": chat, "text": "hi"} for b in bot_ids])

    async def done() -> bool:
        return bool((await ctl.totals())["replied"] >= len(bot_ids))

    try:
        seconds: float | None = await _until(done, within_s, 0.1)
    except TimeoutError:
        seconds = None
    t = await ctl.totals()
    return {
        "all_answered_s": seconds,
        "replied": t["replied"],
        "lost": len(bot_ids) - t["replied"],
        "twice": t["duplicates"],
        "p50_ms": t.get("p50_ms"),
        "p99_ms": t.get("p99_ms"),
        "telegram_429": t["telegram_429"],
        "conflicts_409": t["conflicts"],
        **watch.take(),
    }


def _workers(master: int) -> list[psutil.Process]:
    """The master's worker processes (its other children are the embedded servers)."""
    return [
        p
        for p in psutil.Process(master).children()
        if "supervisor.worker.process" in " ".join(p.cmdline())
    ]


def _log_levels(path: Path) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_bytes().splitlines():
        try:
            r = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(r, dict) and str(r.get("level")) in ("warning", "error", "critical"):
            counts[f"{r.get('level')} {r.get('event')}"] += 1
    return dict(counts)


async def bench(args: argparse.Namespace) -> int:
    children = Children()
    out_dir = Path(tempfile.mkdtemp(prefix="botvisor-scale-", dir="/var/tmp"))
    os.chmod(out_dir, 0o755)  # the embedded PostgreSQL (user nobody) keeps its data inside
    result: dict[str, Any] = {"bots": args.bots, "workers": args.workers, "machine": machine()}
    say(f"scale: state in {out_dir}")
    emu = await start_emulator(children, EmulatorLimits(per_bot="30/1"), out_dir / "emulator.log")
    try:
        async with EmulatorControl(emu.base_url, timeout=120) as ctl:
            bots = await ctl.create_bots(args.bots)
            ids = [b.id for b in bots]
            tokens = out_dir / "tokens.txt"
            tokens.write_text("".join(b.token + "\n" for b in bots))
            tokens.chmod(0o600)
            port = free_port()
            env = _env(emu.base_url, port, None, args.workers, out_dir / ".botvisor")

            t0 = time.perf_counter()
            with open_log(out_dir / "import.log") as log:
                imp = await children.start(
                    BOTVISOR, "bots", "import", str(tokens), env=env, stdout=log, stderr=log
                )
                # the CLI runs in the state directory, like a user in an empty directory
                rc = await imp.wait()
            result["import_s"] = round(time.perf_counter() - t0, 2)
            if rc != 0:
                raise RuntimeError(f"bots import exited {rc}; see {out_dir / 'import.log'}")
            say(f"scale: imported {args.bots} in {result['import_s']} s")

            notify = NotifySocket(out_dir / "notify.sock")
            env = _env(emu.base_url, port, notify.path, args.workers, out_dir / ".botvisor")
            t_emu = (await ctl.stats(per_bot=False))["now"]
            daemon_log = out_dir / "daemon.log"
            with open_log(daemon_log) as log:
                master = await children.start(BOTVISOR, "run", env=env, stdout=log, stderr=log)
            t0 = time.perf_counter()
            ready = asyncio.create_task(notify.wait_for("READY=1", 120))

            async def all_polling() -> bool:
                return await ctl.polling_since(t_emu) >= args.bots

            result["all_polling_s"] = await _until(all_polling, 120)
            await ready
            result["ready_s"] = round(time.perf_counter() - t0, 2)
            say(f"scale: all polling {result['all_polling_s']} s, READY {result['ready_s']} s")
            workers = _workers(master.pid)
            children.orphans[master.pid] = {w.pid for w in workers}
            await asyncio.sleep(3)  # idle: the figure is RSS at rest
            rss, _ = Sut([master.pid, *(w.pid for w in workers)]).memory()
            result["idle_rss_mib"] = round(rss / 2**20, 1)  # master + workers, no servers

            watch = Watch(f"http://127.0.0.1:{port}")
            watcher = asyncio.create_task(watch.run())
            profile = None
            if args.py_spy is not None:
                profile = asyncio.create_task(
                    profile_pids(children, [w.pid for w in workers], args.py_spy, 20)
                )
            result["burst"] = await _burst(ctl, ids, 1, 60, watch)
            if profile is not None:
                await profile
            say(f"scale: burst {result['burst']}")

            # kill the worker with most bots once its traffic is answered
            workers = _workers(master.pid)  # replaced ones included
            victim = max(workers, key=lambda p: p.memory_info().rss)
            t_kill = (await ctl.stats(per_bot=False))["now"]
            os.kill(victim.pid, signal.SIGKILL)
            share = args.bots // args.workers

            async def victims_polling() -> bool:
                return await ctl.polling_since(t_kill) >= share

            try:
                result["kill_repoll_s"] = await _until(victims_polling, 60)
            except TimeoutError:
                result["kill_repoll_s"] = None
            result["kill_burst"] = await _burst(ctl, ids, 2, 60, watch)
            say(f"scale: after SIGKILL {result['kill_repoll_s']} s, {result['kill_burst']}")

            if args.outage_s > 0:
                await ctl.reset_stats()
                await ctl.outage(502, args.outage_s)
                await ctl.inject([{"bot_id": b, "chat_id": 3, "text": "x"} for b in ids])
                t_end = time.perf_counter() + args.outage_s

                async def answered() -> bool:
                    return bool((await ctl.totals())["replied"] >= args.bots)

                await _until(answered, args.outage_s + 60, 0.1)
                t = await ctl.totals()
                result["outage"] = {
                    "seconds": args.outage_s,
                    "all_answered_after_end_s": round(time.perf_counter() - t_end, 2),
                    "lost": args.bots - t["replied"],
                    "twice": t["duplicates"],
                    "telegram_429": t["telegram_429"],
                    "outage_answers": t.get("outage_answers"),
                }
                say(f"scale: outage {result['outage']}")

            watcher.cancel()
            await children.stop(master, grace_s=60)
            notify.close()
            levels = _log_levels(daemon_log)
            result["log_warnings"] = levels
            result["unexpected_warnings"] = sum(
                n for k, n in levels.items() if k.split(" ", 1)[1] not in EXPECTED
            )
    finally:
        await children.stop_all()
        await stop_emulator(children, emu)
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    path = write_json("scale10k", result)
    say(f"scale: written {path}")
    print(orjson.dumps(result).decode())
    return 0


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--bots", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--outage-s", type=float, default=30.0, help="Telegram 502 outage (0: skip)")
    p.add_argument("--keep", action="store_true", help="keep the state directory and logs")
    p.add_argument(
        "--py-spy", type=Path, default=None, help="profile the workers during the burst into DIR"
    )
    args = p.parse_args()
    return run_main(lambda: bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
