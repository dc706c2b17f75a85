"""`botvisor` command line: load the configuration, then run the command in its module.
Every command has --help (supervisor/cli/parser.py); bad config exits 78 naming the key.

`python -m supervisor.cli.main` runs it too (the tests launch the daemon so)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from config import ConfigError, Settings, config_path, load_settings
from supervisor.cli.parser import build_parser
from supervisor.exitcodes import ExitCode


def _run(coro_fn: Callable[..., Coroutine[Any, Any, int]], *args: Any) -> int:
    try:
        import uvloop

        return uvloop.run(coro_fn(*args))
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        if args.command == "doctor":
            print(f"✖ configuration: {exc}; fix it (docs/CONFIGURATION.md lists every key)")
            raise SystemExit(ExitCode.FAILURE) from None
        print(f"botvisor: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None
    from config.log_output import flush_logging
    from config.logging import configure_logging
    from supervisor.cli import preflight

    configure_logging(
        preflight.log_level(args, settings),
        settings.log.format,
        stream=sys.stderr,
        background=args.command == "run",  # a daemon's loop never waits on its log stream
    )
    refused = preflight.refuse_empty(args, settings)
    if refused is not None:
        raise SystemExit(refused)
    preflight.announce(args, settings)
    try:
        raise SystemExit(_dispatch(args, settings))
    except ConfigError as exc:
        flush_logging()  # the daemon's queued lines before its last word
        print(f"botvisor: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # one line for what an operator can fix, else a traceback
        from supervisor.failures import explain

        flush_logging()
        error = explain(exc, settings)
        if error is None or args.debug:
            raise
        print(f"botvisor: {error.line(config_path(args.config))}", file=sys.stderr)
        raise SystemExit(error.exit_status) from None


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    match args.command:
        case "run":
            from supervisor.master.run import run_daemon

            return _run(run_daemon, settings, args.config)
        case "doctor":
            from supervisor.cli.doctor import doctor_command

            return _run(doctor_command, settings, args)
        case "migrate":
            from supervisor.master.run import migrate_only

            return _run(migrate_only, settings)
        case "demo":
            from supervisor.cli.demo import run_demo

            return _run(run_demo, settings, args)
        case "status":
            from supervisor.cli.live import status

            return _run(status, settings, args.json)
        case "reload":
            from supervisor.cli.live import reload

            return _run(reload, settings)
        case "upgrade":
            from supervisor.cli.upgrade import upgrade_command

            return _run(upgrade_command, settings, args)
        case "emulator":
            # by name: the runtime's import graph never reaches the test doubles
            emulator = importlib.import_module("emulators.telegram")
            emulator.run_emulator(args.host, args.port, rate_limits=not args.no_limits)
            return 0
        case "bots":
            from supervisor.cli.bots import bots_command

            return _run(bots_command, settings, args)
        case "handlers":
            from supervisor.cli.handlers import handlers_command

            return handlers_command(settings, args)
        case "owners" | "keys":
            from supervisor.cli.security import keys_command, owners_command

            command = owners_command if args.command == "owners" else keys_command
            return _run(command, settings, args)
        case "shards":
            from supervisor.cli.shards import shards_command

            return _run(shards_command, settings, args)
        case "chats":
            from supervisor.cli.chats import chats_command

            return _run(chats_command, settings, args)
        case "broadcast":
            from supervisor.cli.broadcast import broadcast_command

            return _run(broadcast_command, settings, args)
        case "audit":
            from supervisor.cli.quotas import audit_command

            return _run(audit_command, settings, args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    main()
