#!/usr/bin/env python3
"""Rebalancing: N bots move from W to W+1 workers on a reload; and /metrics scrape time.

The real daemon (tests/daemon.py's harness) with the Bot API emulator in this process.
After READY=1 the config file's workers.count goes W -> W+1 and the daemon gets SIGHUP.
Measured on the emulator's clock (ours):

  all_polling_s   SIGHUP -> every moved bot has long-polled again (first getUpdates
                  after its old poller stopped)
  ready_s         SIGHUP -> RELOADING=1 ... READY=1 again (the master's own view)
  conflicts       409s the emulator gave while it happened (target 0)
  metrics_ms      GET /metrics at N bots: median and max of 20 scrapes

    .venv/bin/python bench/rebalance_bench.py --bots 5000 --workers 2

Targets: all_polling_s <= 3, conflicts == 0. Writes bench/out/rebalance-<time>.json; the
last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    ROOT,
    drop_redis_prefix,
    machine,
    raise_nofile,
    run_main,
    say,
    scratch_database,
    write_json,
)

sys.path.insert(0, str(ROOT))

from bots.telegram.token import BotToken  # noqa: E402
from config import Settings  # noqa: E402
from emulators.telegram.server import open_emulator  # noqa: E402
from supervisor.master.shards import shards_of_worker  # noqa: E402
from supervisor.services import open_registry  # noqa: E402
from tests.daemon import start_daemon  # noqa: E402


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    prefix = f"botvisor-bench-{secrets.token_hex(4)}:"
    tmp = Path(tempfile.mkdtemp(prefix="bvrebal-"))
    config = tmp / "botvisor.toml"
    config.write_text(f"[workers]\ncount = {args.workers}\n")
    try:
        async with (
            scratch_database(args.pg_admin_dsn) as dsn,
            open_emulator(rate_limits=False) as emulator,
        ):
            settings = Settings.model_validate(
                {
                    "database": {"url": dsn},
                    "redis": {"url": args.redis_url, "prefix": prefix},
                    "state": {"dir": str(tmp / "state")},
                    "workers": {"count": args.workers},
                    "log": {"level": "WARNING"},
                }
            )
            bots = emulator.state.create_bots(args.bots)
            async with open_registry(settings) as registry:
                await registry.add_many([(BotToken(b.token), f"b{b.id}") for b in bots])
            total = settings.workers.shards
            after = args.workers + 1
            # a bot moves when its shard's owner changes
            old = {
                s: w for w in range(args.workers) for s in shards_of_worker(w, args.workers, total)
            }
            new = {s: w for w in range(after) for s in shards_of_worker(w, after, total)}
            moved = [b.id for b in bots if old[b.id % total] != new[b.id % total]]
            async with start_daemon(
                settings,
                emulator.base_url,
                tmp,
                ready_timeout=120,
                BOTVISOR_CONFIG=str(config),
                BOTVISOR_WORKERS__COUNT="",
            ) as daemon:
                scrapes = []
                for _ in range(20):
                    t = time.perf_counter()
                    code, _ = await daemon.get("/metrics")
                    scrapes.append((time.perf_counter() - t) * 1000)
                    assert code == 200
                say(f"{args.bots} bots ready on {args.workers} workers; {len(moved)} will move")
                conflicts_before = emulator.state.stats(False)["totals"]["conflicts"]
                config.write_text(f"[workers]\ncount = {after}\n")
                t0 = emulator.state.clock()
                daemon.proc.send_signal(signal.SIGHUP)
                await daemon.notify.wait_for("RELOADING=1", 30)

                def all_moved_polling() -> bool:
                    return all(
                        (emulator.state.bots[i].last_poll_at or 0) > t0
                        and emulator.state.bots[i].polling_now
                        for i in moved
                    )

                async with asyncio.timeout(120):
                    await emulator.state.wait_until(all_moved_polling)
                polling_s = emulator.state.clock() - t0
                status = await daemon.wait_status(
                    lambda s: len(s["workers"]) == after and s["ready"], timeout=120
                )
                ready_s = emulator.state.clock() - t0
                conflicts = emulator.state.stats(False)["totals"]["conflicts"] - conflicts_before
    finally:
        await drop_redis_prefix(args.redis_url, prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "bench": "rebalance",
        "bots": args.bots,
        "workers_from": args.workers,
        "workers_to": after,
        "moved": len(moved),
        "machine": machine(),
        "all_polling_s": round(polling_s, 3),
        "ready_s": round(ready_s, 3),
        "conflicts": conflicts,
        "bots_running_after": sum(w["bots_running"] for w in status["workers"]),
        "metrics_ms_median": round(statistics.median(scrapes), 2),
        "metrics_ms_max": round(max(scrapes), 2),
        "met": polling_s <= 3.0 and conflicts == 0,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bots", type=int, default=5000, help="bots (default 5000)")
    p.add_argument("--workers", type=int, default=2, help="workers before the reload (default 2)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()

    async def go() -> int:
        import orjson

        result = await measure(args)
        path = write_json("rebalance", result)
        say(
            f"{result['moved']} of {args.bots} bots moved {args.workers}->{args.workers + 1}: "
            f"all polling again after {result['all_polling_s']} s, ready after "
            f"{result['ready_s']} s, {result['conflicts']} conflicts; /metrics median "
            f"{result['metrics_ms_median']} ms; {path}"
        )
        print(orjson.dumps(result).decode(), flush=True)
        return 0 if result["met"] else 1

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
