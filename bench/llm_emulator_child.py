#!/usr/bin/env python3
"""One emulator of bench/llm_latency.py in a process of its own (Bot API or OpenAI).

    python bench/llm_emulator_child.py telegram
    python bench/llm_emulator_child.py openai --latency-s 1

Serves the emulator on a free port and, on a second one, the few routes the bench reads
its books through (`/bench/...`, JSON); prints one line
`{"event": "emulator.ready", "port": P, "bench_port": Q}` once both listen, then runs
until SIGTERM. Times are this host's `time.monotonic()` (CLOCK_MONOTONIC: the same in
every process), so the bench can set them against each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulators.openai import RunningLLMEmulator, open_llm_emulator  # noqa: E402
from emulators.telegram.server import RunningEmulator, open_emulator  # noqa: E402

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def telegram_routes(emu: RunningEmulator) -> dict[str, Handler]:
    state = emu.state

    async def bots(request: web.Request) -> web.Response:
        count = int((await request.json())["count"])
        return _json([{"id": b.id, "token": b.token} for b in state.create_bots(count)])

    async def inject(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        at = state.clock()  # the moment the update exists, on the emulator's clock
        state.inject([body])
        return _json({"at": at})

    async def wait(request: web.Request) -> web.Response:
        """Until `replied` messages in all were answered, or `timeout` s passed."""
        goal, timeout = int(request.query["replied"]), float(request.query["timeout"])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await state.wait_until(lambda: state.replied >= goal)
        return _json({"replied": state.replied})

    async def books(request: web.Request) -> web.Response:
        since = float(request.query.get("polling_since", "0"))
        sent = [
            [bot.id, chat_id, text, at]
            for bot in state.bots.values()
            for chat_id, text, _reply_to, at in bot.sent_log
        ]
        return _json(
            {
                "totals": state.stats(False)["totals"],
                "replied": state.replied,
                "latencies": len(state.latencies_ms),
                "sent": sent,
                "polling_since": state.polling_since(since),
                "clock": state.clock(),
            }
        )

    return {"POST bots": bots, "POST inject": inject, "GET wait": wait, "GET books": books}


def llm_routes(llm: RunningLLMEmulator) -> dict[str, Handler]:
    state = llm.state

    async def requests(request: web.Request) -> web.Response:
        """Requests from index `from` on: [arrived at, answered at, status, last user text]."""
        start = int(request.query.get("from", "0"))
        out = []
        for seen in state.requests[start:]:
            users = [m for m in seen.messages if m.get("role") == "user"]
            out.append([seen.started, seen.at, seen.status, users[-1]["content"] if users else ""])
        return _json({"requests": out, "count": len(state.requests), "started": state.started})

    return {"GET requests": requests}


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if args.kind == "telegram":
            emu = await stack.enter_async_context(open_emulator(sent_log_limit=100_000))
            port, routes = emu.port, telegram_routes(emu)
        else:
            llm = await stack.enter_async_context(open_llm_emulator())
            llm.state.latency_s = args.latency_s
            port, routes = llm.port, llm_routes(llm)
        app = web.Application()
        for key, handler in routes.items():
            method, name = key.split()
            app.router.add_route(method, f"/bench/{name}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        bench_port = int(runner.addresses[0][1])
        line = {"event": "emulator.ready", "port": port, "bench_port": bench_port}
        print(orjson.dumps(line).decode(), flush=True)
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("kind", choices=("telegram", "openai"))
    p.add_argument("--latency-s", type=float, default=1.0, help="the model's time per answer")
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
