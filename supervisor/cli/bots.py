"""CLI commands that talk to the registry or the running daemon: bots *, status, reload."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from bots.handlers.base import UnknownHandler
from bots.handlers.plugins import use_paths
from bots.handlers.registry import resolve
from bots.telegram.api import fetch_me
from bots.telegram.errors import BotNetworkError, TelegramError, TokenRejected
from bots.telegram.sessions import open_bot_api_session
from bots.telegram.token import BadToken, BotToken
from config import Settings
from supervisor.cli.move_api import move_api
from supervisor.exitcodes import ExitCode
from supervisor.registry.audit import AuditLog, open_audit
from supervisor.registry.bot_records import BotMode, BotRecord
from supervisor.registry.bot_service import BotService
from supervisor.registry.bot_service_errors import BotServiceError
from supervisor.registry.bots import Registry
from supervisor.registry.owners import ADMIN
from supervisor.services import open_registry, open_services, publish_hint


def _out(text: str) -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(f"botvisor: {text}", file=sys.stderr, flush=True)


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            out[key] = value  # a plain string
    return out


async def bots_command(settings: Settings, args: argparse.Namespace) -> int:
    """`botvisor bots …`: the admin's view, through the same BotService as the HTTP API."""
    writes = args.bots_command not in ("list", "show")  # reads need no Redis for hints
    async with (
        open_services(settings, redis=writes) as live,
        open_registry(live, apply_migrations=writes) as registry,  # reads create nothing
        open_bot_api_session(live) as session,
        open_audit(registry.pool, live.database.timeout_s) as audit,  # rows written by exit
    ):
        if args.bots_command == "import":
            return await _import(live, registry, args, audit)
        svc = BotService(registry, live, session, audit=audit, source="cli")
        try:
            if args.bots_command == "move-api":
                await move_api(live, svc, registry, session, args.id, args.to, _out)
                return 0
            return await _bots(svc, registry, args)
        except BotServiceError as exc:
            _err(exc.message)
            return ExitCode.FAILURE


async def _bots(svc: BotService, registry: Registry, args: argparse.Namespace) -> int:
    match args.bots_command:
        case "add":
            try:
                extra = _parse_sets(args.set)
            except ValueError as exc:
                _err(str(exc))
                return ExitCode.FAILURE
            # a token in a file or a pipe never shows in `ps` or the shell's history
            token = str(args.token) if args.token_file is None else _read_token(args.token_file)
            if token is None:
                return ExitCode.FAILURE
            record = await svc.register(
                ADMIN, token, handler=args.handler, settings=extra, owner=args.owner
            )
            _out(f"bot {record.id} (@{record.username}) registered, handler {record.handler}")
        case "list":
            owners = {o.id: o.name for o in await registry.owners()}
            _list(await svc.list(ADMIN), owners, args.json)
        case "show":
            record = await svc.get(ADMIN, args.id)
            _out(orjson.dumps(record.public(), option=orjson.OPT_INDENT_2).decode())
        case "update":
            return await _update(svc, args)
        case "replace-token":
            new_token = _read_token(args.token_file)
            if new_token is None:
                return ExitCode.FAILURE
            record = await svc.replace_token(ADMIN, args.id, new_token)
            _out(f"bot {record.id} (@{record.username}): token replaced, {record.state}")
        case "pause":
            await svc.pause(ADMIN, args.id)
            _out(f"bot {args.id}: paused")
        case "resume":
            await svc.resume(ADMIN, args.id)
            _out(f"bot {args.id}: resumed")
        case "remove":
            await svc.remove(ADMIN, args.id)
            _out(f"bot {args.id}: removed")
        case _:
            raise AssertionError(args.bots_command)
    return 0


def _read_token(name: str) -> str | None:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        _err(f"--token-file {name}: cannot read it: {exc.strerror}")
        return None
    lines = text.strip().splitlines()
    if not lines:
        _err(f"--token-file {name}: empty; put the token from @BotFather on its first line")
        return None
    return lines[0].strip()


def _list(bots: list[BotRecord], owners: dict[int, str], as_json: bool) -> None:
    if as_json:
        rows = [{**b.public(), "owner": owners.get(b.owner_id or 0)} for b in bots]
        _out(orjson.dumps(rows).decode())
        return
    _out(f"{'ID':>12}  {'USERNAME':<24} {'OWNER':<16} {'HANDLER':<8} {'STATE':<9} REASON")
    for b in bots:
        owner = owners.get(b.owner_id, str(b.owner_id)) if b.owner_id is not None else "-"
        _out(
            f"{b.id:>12}  {b.username:<24} {owner:<16} {b.handler:<8} {b.state:<9} "
            f"{b.disabled_reason or ''}"
        )
    _out(f"{len(bots)} bot(s)")


async def _update(svc: BotService, args: argparse.Namespace) -> int:
    """--set/--unset edit the stored settings; the service stores the whole new object."""
    try:
        changes = _parse_sets(args.set)
    except ValueError as exc:
        _err(str(exc))
        return ExitCode.FAILURE
    if args.handler is None and not changes and not args.unset and args.mode is None:
        _err("nothing to change: give --handler, --mode, --set KEY=VALUE or --unset KEY")
        return ExitCode.FAILURE
    settings: dict[str, Any] | None = None
    if changes or args.unset:
        current = await svc.get(ADMIN, args.id)
        settings = {k: v for k, v in current.settings.items() if k not in args.unset}
        settings.update(changes)
    mode = None if args.mode is None else BotMode(args.mode)
    record = await svc.update(ADMIN, args.id, handler=args.handler, settings=settings, mode=mode)
    _out(f"bot {record.id}: updated (revision {record.revision}, mode {record.mode})")
    return 0


async def _import(
    settings: Settings, registry: Registry, args: argparse.Namespace, audit: AuditLog
) -> int:
    use_paths(settings.handlers.paths)
    try:
        resolve(args.handler)
    except UnknownHandler as exc:
        _err(f"--handler: {exc}")
        return ExitCode.FAILURE
    try:
        lines = args.file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        _err(f"{args.file}: {exc.strerror}")
        return ExitCode.FAILURE
    tokens: list[BotToken] = []
    seen: dict[str, int] = {}  # token -> first line: a repeated line is checked once
    bad = 0
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line in seen:
            _err(f"{args.file}:{number}: same token as line {seen[line]} (skipped)")
            continue
        try:
            tokens.append(BotToken(line))
        except BadToken:
            bad += 1
            _err(f"{args.file}:{number}: not a bot token (line skipped)")
            continue
        seen[line] = number
    usernames: dict[int, str] = {}
    rejected = 0
    if not args.no_check and tokens:
        gate = asyncio.Semaphore(64)
        async with open_bot_api_session(settings) as session:

            async def check(token: BotToken) -> bool:
                async with gate:
                    try:
                        me = await fetch_me(
                            session,
                            settings.telegram.api_base,
                            token,
                            settings.telegram.request_timeout_s,
                        )
                    except TokenRejected:
                        _err(f"bot {token.bot_id}: token rejected by Telegram (skipped)")
                        return False
                    except (TelegramError, BotNetworkError) as exc:
                        _err(f"bot {token.bot_id}: getMe failed ({exc}); skipped")
                        return False
                    usernames[token.bot_id] = str(me.get("username", ""))
                    return True

            results = await asyncio.gather(*(check(t) for t in tokens))
        rejected = results.count(False)
        tokens = [t for t, ok in zip(tokens, results, strict=True) if ok]
    added = await registry.add_many(
        [(t, usernames.get(t.bot_id, "")) for t in tokens], handler=args.handler
    )
    await publish_hint(settings)
    audit.record(
        ADMIN,
        "bots.import",
        "",
        source="cli",
        outcome="ok" if not (bad or rejected) else "partial",
        detail={"added": added, "rejected": rejected, "bad_lines": bad, "handler": args.handler},
    )
    _out(
        f"imported {added} bot(s); {len(tokens) - added} already registered, "
        f"{rejected} rejected, {bad} bad line(s)"
    )
    return 0 if not (bad or rejected) else ExitCode.FAILURE
