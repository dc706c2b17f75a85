"""`botvisor` command line. Every command has --help; bad config exits 78 naming the key."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from config import ConfigError, Settings, load_settings
from supervisor.exitcodes import ExitCode

EPILOG = """\
configuration: TOML file (--config, else ./botvisor.toml if present) overlaid by
environment variables BOTVISOR_SECTION__KEY (e.g. BOTVISOR_TELEGRAM__API_BASE).
With no redis.url / database.url, private servers are started in state.dir.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="botvisor",
        description="Run fleets of Telegram bots: a master, sharded workers, one actor per bot.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML config file (default ./botvisor.toml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "run",
        help="run the daemon (master + workers) in the foreground",
        description="Run the master, its workers and the HTTP endpoints until "
        "SIGTERM (drain, exit 0). SIGHUP reloads the configuration.",
    )
    sub.add_parser("migrate", help="apply pending database migrations and exit")

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

    emu = sub.add_parser("emulator", help="run the Bot API emulator (tests, demo, benchmarks)")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8081)
    emu.add_argument("--no-limits", action="store_true", help="never answer 429")

    bots = sub.add_parser("bots", help="register and manage bots")
    bsub = bots.add_subparsers(dest="bots_command", required=True, metavar="ACTION")
    add = bsub.add_parser("add", help="register a bot (checks the token with getMe)")
    add.add_argument("--token", required=True, help="the token BotFather gave you")
    add.add_argument("--handler", default="echo", help="what the bot does (default echo)")
    add.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a handler setting; repeatable",
    )
    imp = bsub.add_parser("import", help="register many bots from a file, one token a line")
    imp.add_argument("file", type=Path)
    imp.add_argument("--handler", default="echo")
    imp.add_argument(
        "--no-check",
        action="store_true",
        help="skip the getMe check (faster for thousands of known-good tokens)",
    )
    lst = bsub.add_parser("list", help="list registered bots")
    lst.add_argument("--json", action="store_true")
    for name, text in (
        ("show", "show one bot"),
        ("remove", "unregister a bot"),
        ("pause", "stop a bot's polling, keep it registered"),
        ("resume", "resume a paused bot"),
    ):
        cmd = bsub.add_parser(name, help=text)
        cmd.add_argument("id", type=int, help="bot id (the number before ':' in its token)")
    return p


def _run(coro_fn: Callable[..., Coroutine[Any, Any, int]], *args: Any) -> int:
    try:
        import uvloop

        return uvloop.run(coro_fn(*args))
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"botvisor: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None
    from config.logging import configure_logging

    configure_logging(settings.log.level, settings.log.format, stream=sys.stderr)
    try:
        raise SystemExit(_dispatch(args, settings))
    except ConfigError as exc:
        print(f"botvisor: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    match args.command:
        case "run":
            from supervisor.run import run_daemon

            return _run(run_daemon, settings, args.config)
        case "migrate":
            from supervisor.run import migrate_only

            return _run(migrate_only, settings)
        case "demo":
            from supervisor.demo import run_demo

            return _run(run_demo, settings, args)
        case "status":
            from supervisor.live_cli import status

            return _run(status, settings, args.json)
        case "reload":
            from supervisor.live_cli import reload

            return _run(reload, settings)
        case "emulator":
            from bots.emulator import run_emulator

            run_emulator(args.host, args.port, rate_limits=not args.no_limits)
            return 0
        case "bots":
            from supervisor.admin_cli import bots_command

            return _run(bots_command, settings, args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    main()
