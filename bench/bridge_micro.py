#!/usr/bin/env python3
"""The aiogram bridge's own CPU per update, in one process, without I/O.

Feeds echo updates (the emulator's shape, to --bots bots whose update ids count from 1
each) through `AiogramHandler.handle` with the Router of bench/bridge_echo.py, the FSM storage on a context store that holds nothing
(what a chat without FSM state costs), and an API that serialises the request and parses
the emulator's answer like `BotApi.call` does, but sends nothing. The native `echo`
handler runs on the same fake API for comparison.

    .venv/bin/python bench/bridge_micro.py                  # µs per update, median of rounds
    .venv/bin/python bench/bridge_micro.py --ab             # and without the fast paths
    .venv/bin/python bench/bridge_micro.py --instructions --updates 300  # callgrind counts
    .venv/bin/python bench/bridge_micro.py --profile 20000  # cProfile of the bridge, top 40

On a shared machine compare only figures of one invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bots.bridge.session as session_mod  # noqa: E402
from bots.bridge import fastpath  # noqa: E402
from bots.bridge.handler import AiogramHandler, dispatcher_for, warm_up  # noqa: E402
from bots.bridge.params import NotPlain, request_params  # noqa: E402
from bots.handlers.base import BotContext, HandlerDeps  # noqa: E402
from bots.handlers.echo import EchoHandler  # noqa: E402
from bots.telegram.update import Incoming  # noqa: E402

BOT_ID = 123456
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}


class _EmptyContexts:
    """A context store whose every chat is empty and cached (no Redis, no PostgreSQL)."""

    _empty = SimpleNamespace(messages=())

    async def load(self, bot_id: int, chat_id: int) -> Any:
        return self._empty


class _FakeApi:
    """`LimitedApi`'s surface: serialises like `BotApi.call`, answers like the emulator."""

    def __init__(self) -> None:
        self.sent = 0

    def same(self, other: Any) -> bool:
        return other is self

    async def send(self, method: str, params: dict[str, Any], chat_id: int | None) -> Any:
        orjson.dumps(params)
        self.sent += 1
        body = orjson.dumps(
            {
                "ok": True,
                "result": {
                    "message_id": 1000 + self.sent,
                    "from": BOT_USER,
                    "chat": {"id": params["chat_id"], "type": "private", "first_name": "User"},
                    "date": 1_700_000_000,
                    "text": params["text"],
                },
            }
        )
        return orjson.loads(body)["result"]

    async def send_message(
        self, chat_id: int, text: str, *, reply_to: int | None = None, **extra: Any
    ) -> Any:
        params: dict[str, Any] = {"chat_id": chat_id, "text": text, **extra}
        if reply_to is not None:
            params["reply_parameters"] = {
                "message_id": reply_to,
                "allow_sending_without_reply": True,
            }
        return await self.send("sendMessage", params, chat_id)


class _Fleet:
    """`bots` bots of the bridged Router (their own `Bot` each, one Dispatcher) on one
    fake API; update ids count from 1 per bot, as the emulator's (and Telegram's, from
    some offset) do, so equal ids of different bots meet in one process."""

    def __init__(self, dp: Any, api: _FakeApi, bots: int) -> None:
        self.ctxs = []
        for i in range(bots):
            ctx = BotContext(BOT_ID + i, f"bench_{i}_bot", api, {})  # type: ignore[arg-type]
            ctx.api = api  # type: ignore[assignment]
            self.ctxs.append(ctx)
        self.bridges = [AiogramHandler(dp) for _ in range(bots)]
        self._next_id = [1] * bots
        self._rng = random.Random(12)

    def updates(self, n: int, *, each_once: bool = False) -> list[tuple[int, bytes]]:
        out = []
        for i in range(n):
            bot = i if each_once else self._rng.randrange(len(self.ctxs))
            update_id = self._next_id[bot]
            self._next_id[bot] += 1
            chat = 10_000 + self._rng.randrange(40)
            message = {
                "message_id": update_id,
                "from": {"id": chat, "is_bot": False, "first_name": "User"},
                "chat": {"id": chat, "type": "private", "first_name": "User"},
                "date": 1_700_000_000,
                "text": f"hello {i}",
            }
            out.append((bot, orjson.dumps({"update_id": update_id, "message": message})))
        return out


async def _run(fleet: _Fleet, bodies: list[tuple[int, bytes]], native: Any = None) -> float:
    """Seconds of CPU for handling `bodies` (parsing each like the poll does)."""
    t0 = time.process_time()
    for bot, body in bodies:
        handler = native or fleet.bridges[bot]
        await handler.handle(Incoming(orjson.loads(body)), fleet.ctxs[bot])
    return time.process_time() - t0


@contextmanager
def _stock_aiogram() -> Iterator[None]:
    """The bridge without its fast paths (bots/bridge/fastpath.py, params.py)."""

    def generic(method: Any, prepare: Any) -> dict[str, Any]:
        raise NotPlain("A/B")

    fastpath.uninstall()
    session_mod.request_params = generic  # type: ignore[assignment]
    try:
        yield
    finally:
        session_mod.request_params = request_params
        fastpath.install()


async def _main(args: argparse.Namespace) -> None:
    warm_up()
    from bridge_echo import router

    dp = dispatcher_for("bridge_echo:router", router, HandlerDeps(context=_EmptyContexts()))  # type: ignore[arg-type]
    fleet = _Fleet(dp, _FakeApi(), args.bots)
    native = EchoHandler()
    # first-update work (each bot's Bot, schemas, plans) out of the figures
    await _run(fleet, fleet.updates(args.bots, each_once=True))
    with _stock_aiogram():
        await _run(fleet, fleet.updates(200))
    bodies = fleet.updates(args.updates)
    gc.set_threshold(50_000, 20, 100)  # the worker's (supervisor/worker/process.py)
    gc.collect()
    gc.freeze()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        await _run(fleet, fleet.updates(args.profile))
        prof.disable()
        pstats.Stats(prof).sort_stats(args.sort).print_stats(40)
        return

    async def variant(name: str) -> float:
        if name == "stock":
            with _stock_aiogram():
                return await _run(fleet, bodies)
        return await _run(fleet, bodies, native if name == "native" else None)

    names = ["native", "bridge", *(["stock"] if args.ab or args.callgrind_child else [])]
    if args.callgrind_child:
        # under valgrind (see _instructions): count each variant's instructions alone
        for name in names:
            _callgrind("-i", "on")
            await variant(name)
            _callgrind("-i", "off")
            _callgrind("-d", name)
        return
    figures: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            figures[name].append(await variant(name) / len(bodies) * 1e6)
    for name, xs in figures.items():
        print(
            f"{name:<7} µs/update median {statistics.median(xs):8.1f}  min {min(xs):8.1f}"
            f"  ({args.rounds} rounds of {len(bodies)})"
        )


def _callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def _instructions(updates: int, bots: int) -> None:
    """Instructions per update of each variant, counted by callgrind (deterministic where
    timings on a shared machine are not). Takes about a minute for 300 updates."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={tmp}/cg.out",
            sys.executable,
            __file__,
            "--callgrind-child",
            "--updates",
            str(updates),
            "--bots",
            str(bots),
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        for dump in sorted(Path(tmp).glob("cg.out.*")):
            text = dump.read_text()
            name = re.search(r"^desc: Trigger: dump (\S+)", text, re.M)
            total = re.search(r"^totals: (\d+)", text, re.M)
            if name and total:
                per = int(total.group(1)) / updates
                print(f"{name.group(1):<7} instructions/update {per:12,.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=3000)
    p.add_argument(
        "--bots", type=int, default=1000, help="bots the updates go to (default 1000, as the bench)"
    )
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument(
        "--ab", action="store_true", help="also the bridge without its fast paths, interleaved"
    )
    p.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per update under valgrind's callgrind instead of timing",
    )
    p.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--profile", type=int, default=0, help="cProfile this many updates")
    p.add_argument("--sort", default="tottime")
    args = p.parse_args()
    if args.instructions:
        _instructions(args.updates, args.bots)
        return
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
