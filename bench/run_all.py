#!/usr/bin/env python3
"""botvisor vs aiogram's multi-bot polling, same emulator, same load, one invocation.

For every size (and a small N0 run per system, for memory per bot) runs
bench/fleet.py's botvisor run and bench/aiogram_baseline.py's aiogram run back to
back, alternating which goes first, so the noise of a shared machine hits both.
Prints a table (medians over --repeat rounds), the ratios, and writes everything
as JSON to bench/out/run_all-<time>.json (bench/out is git-ignored; nothing else
is written or appended).

    .venv/bin/python bench/run_all.py --quick            # 100 and 1,000 bots
    .venv/bin/python bench/run_all.py --sizes 100,1000,5000 --repeat 3

Ratios: throughput botvisor/aiogram (higher: botvisor serves more), CPU per
reply aiogram/botvisor (higher: botvisor spends less CPU per reply), RSS per bot
of each and aiogram/botvisor, start-up time aiogram/botvisor. With --repeat > 1
each ratio is the median of the per-round (paired) ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiogram_baseline import AiogramOptions, run_aiogram  # noqa: E402
from benchlib import Children, Phases, machine, parse_sizes, run_main, say, write_json  # noqa: E402
from fleet import BotvisorOptions, add_args, per_bot, phases_from, run_botvisor, table  # noqa: E402

#: The numbers that get a median over rounds (paths into one run's result).
METRICS: tuple[tuple[str, ...], ...] = (
    ("all_polling_s",),
    ("ready_s",),
    ("register_s",),
    ("idle", "rss_mib"),
    ("idle", "uss_mib"),
    ("rss_kib_per_bot",),
    ("uss_kib_per_bot",),
    ("throughput", "replies_per_s"),
    ("throughput", "cpu_s_per_1k"),
    ("throughput", "sut_cpu_pct"),
    ("throughput", "emulator_cpu_pct"),
    ("throughput", "driver_cpu_pct"),
    ("throughput", "others_cpu_pct"),
    ("throughput", "machine_busy_pct"),
    ("throughput", "get_updates_per_reply"),
    ("latency", "get_updates_per_reply"),
    ("throughput", "p50_ms"),
    ("throughput", "p99_ms"),
    ("throughput", "lost"),
    ("throughput", "telegram_429"),
    ("latency", "rate"),
    ("latency", "p50_ms"),
    ("latency", "p99_ms"),
    ("latency", "lost"),
    ("latency", "telegram_429"),
)


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = d
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _set(d: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        d = d.setdefault(key, {})
    d[path[-1]] = value


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (sut, bots): the median of each metric over the rounds."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["bots"], r["sut"]), []).append(r)
    rows = []
    for (n, sut), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "botvisor")):
        row: dict[str, Any] = {
            "sut": sut,
            "bots": n,
            "rounds": len(runs),
            "traffic": runs[0].get("traffic"),
        }
        for path in METRICS:
            values = [v for r in runs if isinstance(v := _get(r, path), int | float)]
            if values:
                _set(row, path, round(statistics.median(values), 3))
        errors = [r["error"] for r in runs if r.get("error")]
        if errors:
            row["error"] = "; ".join(errors)
        rows.append(row)
    return rows


def _paired(
    results: list[dict[str, Any]], n: int, fn: Callable[[dict[str, Any], dict[str, Any]], float]
) -> float | None:
    """Median over rounds of fn(botvisor run, aiogram run) for size n."""
    by_rep: dict[int, dict[str, dict[str, Any]]] = {}
    for r in results:
        if r["bots"] == n and not r.get("error"):
            by_rep.setdefault(r.get("rep", 0), {})[r["sut"]] = r
    values = []
    for pair in by_rep.values():
        if "botvisor" in pair and "aiogram" in pair:
            try:
                values.append(fn(pair["botvisor"], pair["aiogram"]))
            except (TypeError, KeyError, ZeroDivisionError):
                continue
    return round(statistics.median(values), 2) if values else None


def ratios(results: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        out.append(
            {
                "bots": n,
                "throughput_botvisor_over_aiogram": _paired(
                    results,
                    n,
                    lambda b, a: (
                        b["throughput"]["replies_per_s"] / a["throughput"]["replies_per_s"]
                    ),
                ),
                "cpu_per_reply_aiogram_over_botvisor": _paired(
                    results,
                    n,
                    lambda b, a: a["throughput"]["cpu_s_per_1k"] / b["throughput"]["cpu_s_per_1k"],
                ),
                "rss_kib_per_bot_botvisor": _paired(results, n, lambda b, a: b["rss_kib_per_bot"]),
                "rss_kib_per_bot_aiogram": _paired(results, n, lambda b, a: a["rss_kib_per_bot"]),
                "rss_per_bot_aiogram_over_botvisor": _paired(
                    results, n, lambda b, a: a["rss_kib_per_bot"] / b["rss_kib_per_bot"]
                ),
                "uss_kib_per_bot_botvisor": _paired(results, n, lambda b, a: b["uss_kib_per_bot"]),
                "uss_kib_per_bot_aiogram": _paired(results, n, lambda b, a: a["uss_kib_per_bot"]),
                "all_polling_aiogram_over_botvisor": _paired(
                    results, n, lambda b, a: a["all_polling_s"] / b["all_polling_s"]
                ),
                "idle_rss_total_aiogram_over_botvisor": _paired(
                    results, n, lambda b, a: a["idle"]["rss_mib"] / b["idle"]["rss_mib"]
                ),
            }
        )
    return out


def ratio_table(rows: list[dict[str, Any]]) -> str:
    def c(v: Any) -> str:
        return "-" if v is None else f"{v:g}"

    head = (
        f"{'bots':>6}  {'thru b/a':>9}  {'CPU/reply a/b':>13}  {'KiB/bot b':>9}  "
        f"{'KiB/bot a':>9}  {'USS/bot b':>9}  {'USS/bot a':>9}  {'poll-time a/b':>13}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['bots']:>6}  {c(r['throughput_botvisor_over_aiogram']):>9}  "
            f"{c(r['cpu_per_reply_aiogram_over_botvisor']):>13}  "
            f"{c(r['rss_kib_per_bot_botvisor']):>9}  {c(r['rss_kib_per_bot_aiogram']):>9}  "
            f"{c(r['uss_kib_per_bot_botvisor']):>9}  {c(r['uss_kib_per_bot_aiogram']):>9}  "
            f"{c(r['all_polling_aiogram_over_botvisor']):>13}"
        )
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    sizes: list[int] = [100, 1000] if args.quick else args.sizes
    bv = BotvisorOptions(
        workers=args.workers,
        redis_url=args.redis_url,
        pg_admin_dsn=args.pg_admin_dsn,
        keep_bot_limit=args.keep_bot_limit,
    )
    ag = AiogramOptions(keep_bot_limit=args.keep_bot_limit)
    ph = phases_from(args)
    info = machine()
    started = time.time()
    children = Children()
    results: list[dict[str, Any]] = []
    flip = False

    async def both(n: int, phases: Phases, rep: int) -> None:
        nonlocal flip
        runs: list[Callable[[], Coroutine[Any, Any, dict[str, Any]]]] = [
            lambda: run_botvisor(n, bv, phases, children),
            lambda: run_aiogram(n, ag, phases, children),
        ]
        if flip:
            runs.reverse()
        flip = not flip
        for run in runs:
            r = await run()
            r["rep"] = rep
            results.append(r)
            per_bot(results)

    try:
        for rep in range(args.repeat):
            say(f"== round {rep + 1} of {args.repeat}: sizes {sizes}, N0 {args.n0}")
            if args.n0 > 0:
                await both(args.n0, Phases(traffic=False), rep)
            for n in sizes:
                await both(n, ph, rep)
                say(table(summarize(results)))
    finally:
        await children.stop_all()

    rows = summarize(results)
    rat = ratios(results, sizes)
    print(
        f"\nbotvisor ({args.workers} workers) vs aiogram (1 process); medians of "
        f"{args.repeat} round(s); {info['cpus']} CPUs, load at start {info['loadavg_start']}"
    )
    print(table(rows))
    print("\nratios (b = botvisor, a = aiogram)")
    print(ratio_table(rat))
    biggest = max(sizes)
    target = next((r for r in rat if r["bots"] == biggest), None)
    if target and target["rss_kib_per_bot_botvisor"] is not None:
        ok = target["rss_kib_per_bot_botvisor"] <= 16
        print(
            f"\nbotvisor RSS per bot at {biggest}: {target['rss_kib_per_bot_botvisor']} KiB "
            f"(target <= 16 KiB: {'met' if ok else 'NOT met'})"
        )
    path = write_json(
        "run_all",
        {
            "bench": "run_all",
            "machine": info,
            "args": vars(args) | {"sizes": sizes},
            "started": started,
            "finished": time.time(),
            "summary": rows,
            "ratios": rat,
            "results": results,
        },
    )
    print(f"\nJSON: {path}")
    return 1 if any(r.get("error") for r in results) else 0


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=[100, 1000, 5000],
        help="comma-separated fleet sizes (default 100,1000,5000)",
    )
    p.add_argument("--quick", action="store_true", help="only 100 and 1,000 bots")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds over all sizes; the table shows medians (default 1)",
    )
    add_args(p)
    args = p.parse_args()
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    raise SystemExit(run_main(lambda: _main(args)))


if __name__ == "__main__":
    main()
