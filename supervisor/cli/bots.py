"""CLI commands that talk to the registry or the running daemon: bots *, status, reload."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiohttp
import orjson

from bots.telegram.api import BotNetworkError, TelegramError, TokenRejected, fetch_me
from bots.telegram.token import BadToken, BotToken
from config import Settings
from supervisor.exitcodes import ExitCode
from supervisor.registry.bot_service import BotService, BotServiceError
from supervisor.registry.bots import BotRecord, Registry
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


def _token(args: argparse.Namespace) -> str:
    """`--token`, or the first line of `--token-file` (stdin for '-'): a token given in
    a file or a pipe never shows in `ps` or the shell's history."""
    if args.token_file is None:
        return str(args.token)
    if args.token_file == "-":
        return sys.stdin.readline(4096).strip()
    with open(args.token_file, encoding="utf-8") as f:
        return f.readline(4096).strip()


async def bots_command(settings: Settings, args: argparse.Namespace) -> int:
    """`botvisor bots …`: the admin's view, through the same BotService as the HTTP API."""
    async with (
        open_services(settings) as live,
        open_registry(live) as registry,
        aiohttp.ClientSession() as session,
    ):
        if args.bots_command == "import":
            return await _import(live, registry, args)
        try:
            return await _bots(BotService(registry, live, session), args)
        except BotServiceError as exc:
            _err(exc.message)
            return ExitCode.FAILURE


async def _bots(svc: BotService, args: argparse.Namespace) -> int:
    match args.bots_command:
        case "add":
            try:
                extra = _parse_sets(args.set)
            except ValueError as exc:
                _err(str(exc))
                return ExitCode.FAILURE
            try:
                token = _token(args)
            except OSError as exc:
                _err(f"--token-file {args.token_file}: cannot read it: {exc.strerror}")
                return ExitCode.FAILURE
            record = await svc.register(
                ADMIN, token, handler=args.handler, settings=extra, owner=args.owner
            )
            _out(f"bot {record.id} (@{record.username}) registered, handler {record.handler}")
        case "list":
            _list(await svc.list(ADMIN), args.json)
        case "show":
            record = await svc.get(ADMIN, args.id)
            _out(orjson.dumps(record.public(), option=orjson.OPT_INDENT_2).decode())
        case "update":
            return await _update(svc, args)
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


def _list(bots: list[BotRecord], as_json: bool) -> None:
    if as_json:
        _out(orjson.dumps([b.public() for b in bots]).decode())
        return
    _out(f"{'ID':>12}  {'USERNAME':<24} {'OWNER':>5} {'HANDLER':<8} {'STATE':<9} REASON")
    for b in bots:
        _out(
            f"{b.id:>12}  {b.username:<24} {b.owner_id or '-':>5} {b.handler:<8} {b.state:<9} "
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
    if args.handler is None and not changes and not args.unset:
        _err("nothing to change: give --handler, --set KEY=VALUE or --unset KEY")
        return ExitCode.FAILURE
    settings: dict[str, Any] | None = None
    if changes or args.unset:
        current = await svc.get(ADMIN, args.id)
        settings = {k: v for k, v in current.settings.items() if k not in args.unset}
        settings.update(changes)
    record = await svc.update(ADMIN, args.id, handler=args.handler, settings=settings)
    _out(f"bot {record.id}: updated (revision {record.revision})")
    return 0


async def _import(settings: Settings, registry: Registry, args: argparse.Namespace) -> int:
    try:
        lines = args.file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        _err(f"{args.file}: {exc.strerror}")
        return ExitCode.FAILURE
    tokens: list[BotToken] = []
    bad = 0
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            tokens.append(BotToken(line))
        except BadToken:
            bad += 1
            _err(f"{args.file}:{number}: not a bot token (line skipped)")
    usernames: dict[int, str] = {}
    rejected = 0
    if not args.no_check and tokens:
        gate = asyncio.Semaphore(64)
        async with aiohttp.ClientSession() as session:

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
    _out(
        f"imported {added} bot(s); {len(tokens) - added} already registered, "
        f"{rejected} rejected, {bad} bad line(s)"
    )
    return 0 if not (bad or rejected) else ExitCode.FAILURE
