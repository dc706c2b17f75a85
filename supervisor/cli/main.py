"""`botvisor` command line. Every command has --help; bad config exits 78 naming the key."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from config import ConfigError, Settings, config_path, load_settings
from supervisor.exitcodes import ExitCode

EPILOG = """\
configuration: TOML file (--config, else ./botvisor.toml if present) overlaid by
environment variables BOTVISOR_SECTION__KEY (e.g. BOTVISOR_TELEGRAM__API_BASE).
With no redis.url / database.url, private servers are started in state.dir.
"""


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="botvisor",
        description="Run fleets of Telegram bots: a master, sharded workers, one actor per bot.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML config file (default ./botvisor.toml)")
    p.add_argument(
        "--debug",
        action="store_true",
        help="print the full traceback of a failure instead of one line",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    bots = sub.add_parser("bots", help="register and manage bots")
    bsub = bots.add_subparsers(dest="bots_command", required=True, metavar="ACTION")
    add = bsub.add_parser("add", help="register a bot (checks the token with getMe)")
    given = add.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--token-file",
        metavar="PATH",
        help="read the token BotFather gave you from PATH, or from stdin with '-'",
    )
    given.add_argument("--token", help="the token itself (visible to `ps`: prefer --token-file)")
    add.add_argument(
        "--handler",
        default="echo",
        help="what the bot does: a built-in (echo), an entry point name, or an import path "
        "package.module:attr of an aiogram Router/Dispatcher or a factory (default echo; "
        "see `botvisor handlers list`)",
    )
    add.add_argument("--owner", metavar="NAME", help="the owner (see `botvisor owners add`)")
    add.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a handler setting; repeatable",
    )
    upd = bsub.add_parser("update", help="change a bot's handler, settings or mode")
    upd.add_argument("id", type=int, help="bot id (the number before ':' in its token)")
    upd.add_argument("--handler", help="the new handler")
    upd.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="set a setting; repeatable"
    )
    upd.add_argument("--unset", action="append", default=[], metavar="KEY", help="drop a setting")
    upd.add_argument(
        "--mode",
        choices=("polling", "webhook"),
        help="how the bot receives updates; webhook needs webhook.public_url (switched live)",
    )
    mov = bsub.add_parser(
        "move-api",
        help="move a bot to another Bot API server (a local telegram-bot-api, or back)",
        description="Move a bot between Bot API servers: logOut on the cloud server "
        "(telegram.api_base) when leaving it, close on a local server when leaving that, "
        "then store the new base in the bot's settings (telegram.api_base). Telegram "
        "refuses close in the first 10 minutes after a bot's launch, and a bot logged out "
        "of the cloud may log in there again only after 10 minutes.",
    )
    mov.add_argument("id", type=int, help="bot id (the number before ':' in its token)")
    mov.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the new Bot API base, e.g. http://127.0.0.1:8081 (a local server) or "
        "telegram.api_base (back to the cloud)",
    )
    rep = bsub.add_parser(
        "replace-token",
        help="give a bot a new token (after /revoke), keeping owner and settings",
        description="Store a new token from @BotFather for a registered bot (the bot id stays "
        "the same): checked with getMe, encrypted under the current key; a bot disabled "
        "for a revoked token polls again. The token is read from a file (or - for stdin) "
        "so it never shows in `ps` or the shell history.",
    )
    rep.add_argument("id", type=int, help="bot id (the number before ':' in its token)")
    rep.add_argument(
        "--token-file",
        required=True,
        metavar="FILE",
        help="file holding the new token on its first line; - reads stdin",
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

    handlers = sub.add_parser("handlers", help="what a bot's --handler may name")
    hsub = handlers.add_subparsers(dest="handlers_command", required=True, metavar="ACTION")
    hsub.add_parser("list", help="built-in handlers, installed entry points, handler paths")
    hchk = hsub.add_parser(
        "check", help="import a handler reference the way a worker does and say what it is"
    )
    hchk.add_argument("ref", help="a name or an import path like package.module:router")
    owners = sub.add_parser("owners", help="owners of bots and their API keys")
    osub = owners.add_subparsers(dest="owners_command", required=True, metavar="ACTION")
    oadd = osub.add_parser(
        "add",
        help="create an owner; prints its API key once",
        description="Create an owner and print its API key for the admin API "
        "(Authorization: Bearer KEY). Only a hash is stored: the key is shown this once.",
    )
    oadd.add_argument("name", help="1-64 letters, digits and . _ @ -")
    olist = osub.add_parser("list", help="list owners and how many bots each has")
    olist.add_argument("--json", action="store_true")
    oshow = osub.add_parser(
        "show",
        help="an owner's quota and today's usage",
        description="Show an owner's quota (the [quotas] defaults unless set for it) and its "
        "usage today (UTC): bots, messages handled, LLM tokens.",
    )
    oshow.add_argument("owner", metavar="OWNER", help="owner name or id")
    oshow.add_argument("--json", action="store_true", help="print JSON")
    oquota = osub.add_parser(
        "set-quota",
        help="set an owner's quota (flags not given stay as they are)",
        description="Override the [quotas] defaults for one owner. Each value is a whole "
        "number (0 = unlimited) or `default` (use the configured default again). Bots over "
        "the quota keep running; new registrations are refused.",
    )
    oquota.add_argument("owner", metavar="OWNER", help="owner name or id")
    for flag in ("bots", "messages-per-day", "llm-tokens-per-day"):
        oquota.add_argument(
            f"--{flag}",
            type=_quota_value,
            default=...,
            metavar="N|default",
            help=f"{flag.replace('-', ' ')}: N (0 = unlimited) or `default`",
        )
    oquota.add_argument("--json", action="store_true", help="print the result as JSON")

    aud = sub.add_parser(
        "audit",
        help="who did what, when and from where (the audit log)",
        description="Rows of the audit log, oldest first: every owner/admin action from the "
        "admin API, the CLI and the manager bot, with its actor, source and outcome.",
    )
    aud.add_argument(
        "--since",
        metavar="WHEN",
        help="only rows since WHEN: a duration back (24h, 7d) or an ISO 8601 date/time",
    )
    aud.add_argument("--action", help="an action (bot.pause) or a prefix ending in '.' (bot.)")
    aud.add_argument("--target", help="a target, e.g. bot:123 or owner:7")
    aud.add_argument(
        "--limit", type=int, default=100, help="at most this many, the newest (default 100)"
    )
    aud.add_argument("--json", action="store_true", help="one JSON object per line")

    keys = sub.add_parser("keys", help="encryption keys of the stored bot tokens")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    rot = ksub.add_parser(
        "rotate",
        help="re-encrypt every stored token under the current key",
        description="Re-encrypt, in batches and while the daemon runs, every bot token not "
        "under the current key. Configured keys: first set security.encryption_key to the "
        "new key and security.previous_keys to the old ones, reload, then rotate. Key file "
        "in state.dir: --generate makes a new current key and keeps the old ones.",
    )
    rot.add_argument(
        "--generate",
        action="store_true",
        help="first add a new current key to state.dir's key file (no configured key only)",
    )
    rot.add_argument("--batch", type=int, default=500, help="rows per UPDATE (default 500)")

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

    chats = sub.add_parser("chats", help="conversations of openai bots")
    csub = chats.add_subparsers(dest="chats_command", required=True, metavar="ACTION")
    rel = csub.add_parser(
        "release",
        help="give a chat handed to a human operator back to its bot",
        description="End the operator handoff of one chat: the bot answers it again. "
        "A group's negative chat id goes after --, e.g. `chats release 123 -- -100456`.",
    )
    rel.add_argument("bot", type=int, help="bot id (the number before ':' in its token)")
    rel.add_argument("chat", type=int, help="Telegram chat id")

    from supervisor.cli import broadcast

    broadcast.add_parser(sub)
    return p


def _quota_value(text: str) -> int | None:
    from supervisor.cli.quotas import quota_value

    return quota_value(text)


def _emulator_help() -> str:
    # by name: the runtime's import graph never reaches the test doubles
    return str(importlib.import_module("emulators.telegram.openapi").help_text())


def _run(coro_fn: Callable[..., Coroutine[Any, Any, int]], *args: Any) -> int:
    try:
        import uvloop

        return uvloop.run(coro_fn(*args))
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
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
