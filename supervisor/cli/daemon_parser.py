"""The arguments of the daemon's commands: run, migrate, doctor, demo, status, reload,
upgrade, emulator, shards (supervisor/cli/parser.py puts them in `botvisor`'s parser)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any


def add_daemon_commands(sub: Any, argv: list[str]) -> None:
    """run … emulator; `argv`: the emulator's epilog is built only when it is asked for."""
    sub.add_parser(
        "run",
        help="run the daemon (master + workers) in the foreground",
        description="Run the master, its workers and the HTTP endpoints until "
        "SIGTERM (drain, exit 0). SIGHUP reloads the configuration; SIGUSR2 replaces the "
        "workers one at a time with fresh interpreters (`botvisor upgrade`).",
    )
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    sub.add_parser(
        "doctor",
        help="check configuration, Redis, PostgreSQL, the Bot API, state dir, limits, unit",
        description="One line per check, ✔ or ✖ with what to do; exit status 1 if any ✖. "
        "Changes nothing.",
    )

    demo = sub.add_parser(
        "demo",
        help="run a self-contained demo against the emulator",
        description="Embedded services, the Bot API emulator, the daemon "
        "and simulated users; a live view, then a summary.",
    )
    demo.add_argument("--bots", type=int, default=200, help="bots to register (default 200)")
    demo.add_argument(
        "--duration", type=float, default=60.0, help="seconds of simulated traffic (default 60)"
    )
    demo.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="user messages per second in total (default: 2 per bot per second, at most 1000)",
    )
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    demo.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on the last line"
    )

    st = sub.add_parser("status", help="show workers and bots of the running daemon")
    st.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser(
        "reload",
        help="make the running daemon reload its configuration (same as SIGHUP)",
        description="Publishes a reload request on Redis (the same handler as SIGHUP); "
        "falls back to SIGHUP via state.dir/master.pid when Redis cannot be reached.",
    )

    up = sub.add_parser(
        "upgrade",
        help="replace the workers one at a time with fresh interpreters (new code), no downtime",
        description="Rolling code upgrade of the running daemon: each worker in turn gets a "
        "replacement that boots with the code installed now (handler modules included); the "
        "old worker stops its bots and saves their progress, then the new one starts them. "
        "No bot polls twice and no update is lost; /readyz stays 200 with the reason "
        "`upgrading: …`. Same as `kill -USR2 <master pid>` and POST /v1/upgrade. Waits for "
        "the end; progress on stderr, one line on stdout. Exit status: 0 upgraded; 1 failed "
        "(the worker being replaced keeps serving), refused (an upgrade runs already), or no "
        "daemon answered.",
    )
    up.add_argument("--json", action="store_true", help="print the final progress as JSON")
    up.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="stop waiting after this long; the upgrade goes on (default 900)",
    )

    emu = sub.add_parser(
        "emulator",
        help="run the Bot API emulator: test bots locally without Telegram",
        description="Serve a local Bot API emulator: create bots, inject user messages and "
        "read the bots' answers over its control API.",
        # the emulator's package is imported only for its own help (~0.3 s)
        epilog=_emulator_help() if "emulator" in argv else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8081)
    emu.add_argument("--no-limits", action="store_true", help="never answer 429")


def add_shards_command(sub: Any) -> None:
    shards = sub.add_parser(
        "shards",
        help="the cluster's shards: which host holds which (leases)",
        description="Shards are held by leases in PostgreSQL, about 1/N of them per host.",
    )
    ssub = shards.add_subparsers(dest="shards_command", required=True, metavar="ACTION")
    show = ssub.add_parser("show", help="every host and the shards it holds")
    show.add_argument("--json", action="store_true", help="print JSON")
    mig = ssub.add_parser(
        "migrate",
        help="change the cluster's shard count (every host stopped)",
        description="The shard count is fixed per cluster; this changes the stored count. "
        "Refused while any host holds a lease or renews its presence.",
    )
    mig.add_argument("--to", type=int, required=True, metavar="N", help="new shard count")


def _emulator_help() -> str:
    # by name: the runtime's import graph never reaches the test doubles
    return str(importlib.import_module("emulators.telegram.openapi").help_text())
