#!/usr/bin/env python3
"""Echo through the aiogram bridge vs botvisor's native echo vs aiogram's own polling.

One invocation, same machine, same emulator settings and traffic (bench/fleet.py's
phases): N bots whose handler is the native `echo`, N bots whose handler is the aiogram
Router `bench/bridge_echo.py:router` run by botvisor's bridge, and (unless --no-aiogram)
aiogram 3's own `Dispatcher.start_polling(*bots)` (bench/aiogram_baseline.py). The order
rotates every round so a shared machine's noise hits each.

    .venv/bin/python bench/aiogram_bridge_bench.py --bots 1000
    .venv/bin/python bench/aiogram_bridge_bench.py --bots 1000 --repeat 2 --no-aiogram

Targets (issue 12): bridge CPU per reply <= 2x native; bridge throughput >= 3x aiogram's.
The last line of output is one JSON object (also written to bench/out/).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import orjson  # noqa: E402
from aiogram_baseline import AiogramOptions, run_aiogram  # noqa: E402
from benchlib import Children, machine, run_main, say, write_json  # noqa: E402
from fleet import BotvisorOptions, add_args, phases_from, run_botvisor, table  # noqa: E402

BRIDGE = "bridge_echo:router"


def _metric(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [
        r["throughput"][key]
        for r in runs
        if not r.get("error") and isinstance((r.get("throughput") or {}).get(key), int | float)
    ]
    return round(statistics.median(values), 3) if values else None


async def _main(args: argparse.Namespace) -> int:
    common = {
        "workers": args.workers,
        "redis_url": args.redis_url,
        "pg_admin_dsn": args.pg_admin_dsn,
        "keep_bot_limit": args.keep_bot_limit,
    }
    native = BotvisorOptions(**common)
    bridge = BotvisorOptions(**common, handler=BRIDGE, handler_paths=(str(HERE),))
    ag = AiogramOptions(keep_bot_limit=args.keep_bot_limit)
    ph = phases_from(args)
    info = machine()
    started = time.time()
    children = Children()
    results: dict[str, list[dict[str, Any]]] = {"native": [], "bridge": [], "aiogram": []}
    runs: list[tuple[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]]] = [
        ("native", lambda: run_botvisor(args.bots, native, ph, children)),
        ("bridge", lambda: run_botvisor(args.bots, bridge, ph, children)),
    ]
    if not args.no_aiogram:
        runs.append(("aiogram", lambda: run_aiogram(args.bots, ag, ph, children)))
    try:
        for rep in range(args.repeat):
            order = runs[rep % len(runs) :] + runs[: rep % len(runs)]
            say(f"== round {rep + 1} of {args.repeat}: {[name for name, _ in order]}")
            for name, run in order:
                r = await run()
                r["rep"] = rep
                r["sut"] = name
                results[name].append(r)
                say(table([r]))
    finally:
        await children.stop_all()

    summary = {
        name: {
            "replies_per_s": _metric(rs, "replies_per_s"),
            "cpu_s_per_1k": _metric(rs, "cpu_s_per_1k"),
            "p50_ms": _metric(rs, "p50_ms"),
            "p99_ms": _metric(rs, "p99_ms"),
            "lost": sum((r.get("throughput") or {}).get("lost") or 0 for r in rs),
        }
        for name, rs in results.items()
        if rs
    }
    n, b, a = summary["native"], summary["bridge"], summary.get("aiogram")
    verdict: dict[str, Any] = {}
    if n["cpu_s_per_1k"] and b["cpu_s_per_1k"]:
        verdict["bridge_cpu_over_native"] = round(b["cpu_s_per_1k"] / n["cpu_s_per_1k"], 2)
        verdict["cpu_target_met"] = verdict["bridge_cpu_over_native"] <= 2.0
    if a and a["replies_per_s"] and b["replies_per_s"]:
        verdict["bridge_throughput_over_aiogram"] = round(
            b["replies_per_s"] / a["replies_per_s"], 2
        )
        verdict["throughput_target_met"] = verdict["bridge_throughput_over_aiogram"] >= 3.0
    print(
        f"\n{args.bots} bots, {args.workers} workers, {args.repeat} round(s); {info['cpus']} CPUs"
    )
    print(table([r for rs in results.values() for r in rs]))
    for name, s in summary.items():
        print(
            f"{name:<8} replies/s {s['replies_per_s']}  CPU s/1k replies {s['cpu_s_per_1k']}"
            f"  p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  lost {s['lost']}"
        )
    print("verdict:", verdict)
    doc = {
        "bench": "aiogram_bridge",
        "machine": info,
        "args": vars(args),
        "started": started,
        "finished": time.time(),
        "summary": summary,
        "verdict": verdict,
        "results": results,
    }
    path = write_json("aiogram_bridge", doc)
    print(f"JSON: {path}")
    print(orjson.dumps({"summary": summary, "verdict": verdict}).decode())
    errors = [r for rs in results.values() for r in rs if r.get("error")]
    return 1 if errors else 0


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument("--bots", type=int, default=1000, help="bots per run (default 1000)")
    p.add_argument("--repeat", type=int, default=1, help="rounds (default 1)")
    p.add_argument("--no-aiogram", action="store_true", help="skip aiogram's own polling")
    add_args(p)
    args = p.parse_args()
    raise SystemExit(run_main(lambda: _main(args)))


if __name__ == "__main__":
    main()
