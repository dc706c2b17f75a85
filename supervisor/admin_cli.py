"""CLI commands that talk to the registry or the running daemon: bots *, status, reload."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import aiohttp
import orjson

from bots.api import BotNetworkError, TelegramError, TokenRejected, fetch_me
from bots.handlers.base import HANDLERS
from bots.token import BadToken, BotToken
from config import Settings
from supervisor.exitcodes import ExitCode
from supervisor.registry import AlreadyRegistered, BotState, Registry
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
    async with open_services(settings) as live, open_registry(live) as registry:
        match args.bots_command:
            case "add":
                return await _add(live, registry, args)
            case "import":
                return await _import(live, registry, args)
            case "list":
                bots = await registry.list()
                if args.json:
                    _out(orjson.dumps([b.public() for b in bots]).decode())
                else:
                    _out(f"{'ID':>12}  {'USERNAME':<24} {'HANDLER':<8} {'STATE':<9} REASON")
                    for b in bots:
                        _out(
                            f"{b.id:>12}  {b.username:<24} {b.handler:<8} {b.state:<9} "
                            f"{b.disabled_reason or ''}"
                        )
                    _out(f"{len(bots)} bot(s)")
                return 0
            case "show":
                record = await registry.get(args.id)
                if record is None:
                    _err(f"bot {args.id} is not registered")
                    return ExitCode.FAILURE
                _out(orjson.dumps(record.public(), option=orjson.OPT_INDENT_2).decode())
                return 0
            case "remove" | "pause" | "resume":
                return await _change(live, registry, args.bots_command, args.id)
    raise AssertionError(args.bots_command)


async def _change(settings: Settings, registry: Registry, action: str, bot_id: int) -> int:
    if action == "remove":
        ok = await registry.remove(bot_id)
    else:
        state = BotState.PAUSED if action == "pause" else BotState.ACTIVE
        ok = await registry.set_state(bot_id, state)
    if not ok:
        _err(f"bot {bot_id} is not registered")
        return ExitCode.FAILURE
    await publish_hint(settings, (bot_id,))
    _out(f"bot {bot_id}: {action}d" if action != "resume" else f"bot {bot_id}: resumed")
    return 0


async def _add(settings: Settings, registry: Registry, args: argparse.Namespace) -> int:
    if args.handler not in HANDLERS:
        _err(f"unknown handler {args.handler!r}; available: {', '.join(sorted(HANDLERS))}")
        return ExitCode.FAILURE
    try:
        token = BotToken(args.token)
        extra = _parse_sets(args.set)
    except (BadToken, ValueError) as exc:
        _err(str(exc))
        return ExitCode.FAILURE
    async with aiohttp.ClientSession() as session:
        try:
            me = await fetch_me(
                session, settings.telegram.api_base, token, settings.telegram.request_timeout_s
            )
        except TokenRejected:
            _err(
                f"Telegram rejected the token of bot {token.bot_id} (401): "
                "check it with @BotFather; revoked tokens never work again"
            )
            return ExitCode.FAILURE
        except (TelegramError, BotNetworkError) as exc:
            _err(f"could not check the token with getMe at {settings.telegram.api_base}: {exc}")
            return ExitCode.FAILURE
    try:
        record = await registry.add(
            token, username=str(me.get("username", "")), handler=args.handler, settings=extra
        )
    except AlreadyRegistered as exc:
        _err(str(exc))
        return ExitCode.FAILURE
    await publish_hint(settings, (record.id,))
    _out(f"bot {record.id} (@{record.username}) registered, handler {record.handler}")
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


async def status(settings: Settings, as_json: bool) -> int:
    url = f"http://{settings.http.host}:{settings.http.port}/v1/status"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            data = await resp.json(loads=orjson.loads)
    except (aiohttp.ClientError, TimeoutError) as exc:
        _err(f"no daemon answers at {url} ({type(exc).__name__}); is `botvisor run` running?")
        return ExitCode.FAILURE
    if as_json:
        _out(orjson.dumps(data).decode())
        return 0
    _out(f"ready: {data['ready']} ({data['reason']}), worker restarts: {data['worker_restarts']}")
    _out(f"{'WORKER':>6} {'PID':>8} {'STATE':<9} {'BOTS':>11} {'LAG ms':>7} {'P99 ms':>7}")
    for w in data["workers"]:
        _out(
            f"{w['index']:>6} {w['pid'] or '-':>8} {w['state']:<9} "
            f"{w['bots_running']:>5}/{w['bots_desired']:<5} {w['loop_lag_ms'] or 0:>7} "
            f"{w['p99_ms'] or 0:>7}"
        )
    _out(f"bots by state: {data['bots_by_state']}")
    return 0


def reload(settings: Settings) -> int:
    from supervisor.run import pidfile

    path = pidfile(settings)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except FileNotFoundError:
        _err(f"no {path}: is `botvisor run` running with this state.dir?")
        return ExitCode.FAILURE
    except (ValueError, ProcessLookupError, PermissionError) as exc:
        _err(f"cannot signal the master from {path}: {exc}")
        return ExitCode.FAILURE
    _out(f"reload requested (pid {pid})")
    return 0
