"""The demo's closing summary: figures, the daemon log's warnings, a one-line verdict."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

#: Levels that make a demo fail: warnings are how scale bugs first show.
BAD_LEVELS = frozenset({"warning", "error", "critical"})


def warning_lines(log: Path) -> int:
    """WARNING-or-worse lines in a JSON daemon log (0 when there is no log)."""
    try:
        raw = log.read_bytes()
    except OSError:
        return 0
    count = 0
    for line in raw.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and str(record.get("level")) in BAD_LEVELS:
            count += 1
    return count


def summary(
    t: Mapping[str, Any],
    *,
    bots: int,
    bots_running: int,
    workers: int,
    ready_s: float,
    duration_s: float,
    worker_restarts: int,
    master_exit: int,
    interrupted: bool,
    elapsed_s: float,
    log_warnings: int,
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "bots": bots,
        "bots_running": bots_running,
        "workers": workers,
        "ready_s": round(ready_s, 2),
        "duration_s": duration_s,
        "injected": t["injected"],
        "replied": t["replied"],
        "lost": t["lost"],
        "duplicates": t["duplicates"],
        "out_of_order": t["out_of_order"],
        "telegram_429": t["telegram_429"],
        "conflicts": t["conflicts"],
        "p50_ms": t["p50_ms"],
        "p99_ms": t["p99_ms"],
        "worker_restarts": worker_restarts,
        "master_exit": master_exit,
        "log_warnings": log_warnings,
        "interrupted": interrupted,
        "elapsed_s": round(elapsed_s, 1),
    }
    s["verdict"] = verdict(s)
    return s


def verdict(s: Mapping[str, Any]) -> str:
    """One line: OK or FAIL, and why."""
    problems = []
    if s["bots_running"] != s["bots"]:
        problems.append(f"{s['bots_running']}/{s['bots']} bots running")
    if s["lost"]:
        problems.append(f"{s['lost']} message(s) lost")
    if s["master_exit"]:
        problems.append(f"the daemon exited {s['master_exit']}")
    if s["log_warnings"]:
        problems.append(f"{s['log_warnings']} WARNING/ERROR line(s) in daemon.log")
    head = "FAIL: " + ", ".join(problems) if problems else "OK"
    partial = " (interrupted: partial run)" if s["interrupted"] else ""
    return (
        f"{head}{partial}; {s['replied']}/{s['injected']} answered, "
        f"{s['telegram_429']} × 429, p99 {s['p99_ms']} ms"
    )


def print_summary(s: Mapping[str, Any], as_json: bool, say: Callable[[str], None]) -> None:
    if as_json:
        say(f"verdict: {s['verdict']}")
        print(orjson.dumps(s).decode(), flush=True)
        return
    say("\nsummary" + (" (interrupted)" if s["interrupted"] else ""))
    for key, value in s.items():
        if key != "verdict":
            say(f"  {key:<16} {value}")
    say(f"verdict: {s['verdict']}")
