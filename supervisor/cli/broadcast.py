"""`botvisor broadcast BOT --text … [--follow]` and `botvisor broadcast BOT --cancel ID`.

Runs in a CLI process against the registry (the admin's view), through the same
BroadcastService as the HTTP API; the daemon's worker that runs the bot sends it. Starts
and cancels are recorded in the audit log (source `cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Final

import orjson
from pydantic import ValidationError

from config import Settings
from supervisor.exitcodes import ExitCode
from supervisor.registry.audit import open_audit
from supervisor.registry.bot_service_errors import BotServiceError
from supervisor.registry.broadcast_records import BroadcastRecord, BroadcastState
from supervisor.registry.broadcast_service import BroadcastService, NewBroadcast
from supervisor.registry.owners import ADMIN
from supervisor.services import open_registry, open_services

#: --follow reads the progress this often
FOLLOW_EVERY_S: Final = 0.5
_BAR: Final = 30


def add_parser(sub: Any) -> None:
    """`broadcast` in the CLI's subcommands (supervisor/cli/parser.py)."""
    p = sub.add_parser(
        "broadcast",
        help="send a message to every chat of a bot",
        description="Send one message to every chat the bot has seen and that has not "
        "blocked it, at the bot's full rate while its replies keep priority. The running "
        "daemon's worker sends it; this command starts, follows or cancels it.",
    )
    p.add_argument("bot", type=int, help="bot id (the number before ':' in its token)")
    p.add_argument("--text", help="the message text (up to 4096 characters)")
    p.add_argument("--parse-mode", choices=("HTML", "MarkdownV2", "Markdown"), default=None)
    p.add_argument(
        "--button",
        action="append",
        default=[],
        metavar="TEXT=URL",
        help="an inline link button under the message, one row each (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="only count the audience")
    p.add_argument("--follow", action="store_true", help="show progress until it ends")
    p.add_argument("--cancel", type=int, metavar="ID", help="cancel broadcast ID of the bot")
    p.add_argument("--show", type=int, metavar="ID", help="print broadcast ID's progress")
    p.add_argument("--json", action="store_true", help="print JSON")


def _err(text: str) -> None:
    print(f"botvisor: {text}", file=sys.stderr, flush=True)


def _message(args: argparse.Namespace) -> NewBroadcast | str:
    """The request, or what is wrong with the arguments."""
    buttons = []
    for item in args.button:
        text, sep, url = item.partition("=")
        if not sep or not text or not url:
            return f"--button {item!r}: expected TEXT=URL"
        buttons.append([{"text": text, "url": url}])
    try:
        return NewBroadcast.model_validate(
            {
                "text": args.text,
                "parse_mode": args.parse_mode,
                "buttons": buttons,
                "dry_run": args.dry_run,
            }
        )
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ).replace("text: Input should be a valid string", "--text is required")


def as_json(r: BroadcastRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "bot_id": r.bot_id,
        "state": str(r.state),
        "total": r.total,
        "sent": r.sent,
        "failed": r.failed,
        "blocked": r.blocked,
        "unknown": r.unknown,
        "remaining": r.remaining,
        "rate": r.rate,
        "eta_s": r.eta_s,
    }


def summary(r: BroadcastRecord) -> str:
    extra = f", {r.unknown} unknown" if r.unknown else ""
    return (
        f"broadcast {r.id} of bot {r.bot_id}: {r.state}, {r.sent} sent, {r.failed} failed, "
        f"{r.blocked} blocked{extra}, {r.remaining} remaining of {r.total}"
    )


def progress_line(r: BroadcastRecord) -> str:
    done = r.total - r.remaining
    filled = _BAR * done // r.total if r.total else _BAR
    eta = f" ETA {r.eta_s:.0f}s" if r.eta_s is not None else ""
    return (
        f"[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{r.total} "
        f"sent {r.sent} failed {r.failed} blocked {r.blocked} {r.rate:.1f}/s{eta}"
    )


async def broadcast_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.cancel is None and args.show is None and args.text is None:
        _err("give --text to start a broadcast, --cancel ID or --show ID")
        return ExitCode.FAILURE
    message = _message(args) if args.cancel is None and args.show is None else None
    if isinstance(message, str):
        _err(message)
        return ExitCode.FAILURE
    async with (
        open_services(settings, redis=False) as live,
        open_registry(live) as registry,
        open_audit(registry.pool, live.database.timeout_s) as audit,  # rows written by exit
    ):
        svc = BroadcastService(registry, live, audit=audit, source="cli")
        try:
            return await _run(svc, args, message)
        except BotServiceError as exc:
            _err(exc.message)
            return ExitCode.FAILURE


async def _run(svc: BroadcastService, args: argparse.Namespace, msg: NewBroadcast | None) -> int:
    if args.cancel is not None:
        record = await svc.cancel(ADMIN, args.bot, args.cancel)
        print(orjson.dumps(as_json(record)).decode() if args.json else summary(record))
        return ExitCode.OK
    if args.show is not None:
        record = await svc.progress(ADMIN, args.bot, args.show)
    else:
        assert msg is not None
        if msg.dry_run:
            n = await svc.audience(ADMIN, args.bot)
            out = {"bot_id": args.bot, "dry_run": True, "audience": n}
            print(orjson.dumps(out).decode() if args.json else f"would go to {n} chats")
            return ExitCode.OK
        record = await svc.start(ADMIN, args.bot, msg)
        if not args.json:
            print(f"broadcast {record.id} started: {record.total} chats", flush=True)
    if args.follow:
        record = await _follow(svc, record, tty=sys.stdout.isatty() and not args.json)
    print(orjson.dumps(as_json(record)).decode() if args.json else summary(record), flush=True)
    return ExitCode.OK


async def _follow(svc: BroadcastService, record: BroadcastRecord, *, tty: bool) -> BroadcastRecord:
    """Until it is done or cancelled: a redrawn bar on a terminal, else a line per change."""
    last = ""
    while record.state in (BroadcastState.PENDING, BroadcastState.RUNNING):
        line = progress_line(record)
        if tty:
            print(f"\r{line}", end="", flush=True)
        elif line != last:
            print(line, flush=True)
        last = line
        await asyncio.sleep(FOLLOW_EVERY_S)
        record = await svc.progress(ADMIN, record.bot_id, record.id)
    if tty:
        print(f"\r{progress_line(record)}", flush=True)
    return record
