#!/usr/bin/env python3
"""The floor under bench/llm_latency.py: the least a bot can do, without botvisor.

    python bench/llm_baseline_bot.py --api URL --llm URL   (bot tokens: one a line on stdin)

Per bot one long poll (aiohttp, uvloop); each message, as it arrives and in a task of
its own, goes to the model through the same `openai` SDK call botvisor makes
(`AsyncOpenAI(http_client=DefaultAioHttpClient())`, `post("/chat/completions",
cast_to=ChatCompletion)`, the user's text alone: no history, no context store), and the
answer goes back with sendMessage. No inbox, no limiter, no retries: what the emulators
and the SDK cost on this machine. Prints `{"event": "baseline.ready"}` once every bot's
first long poll is out; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import aiohttp
import openai
import orjson
from openai.types.chat import ChatCompletion


async def answer(
    session: aiohttp.ClientSession, llm: openai.AsyncOpenAI, base: str, update: dict[str, Any]
) -> None:
    message = update.get("message") or {}
    text = message.get("text")
    if not text:
        return
    done = await llm.post(
        "/chat/completions",
        body={"model": "emu-1", "messages": [{"role": "user", "content": text}]},
        cast_to=ChatCompletion,
    )
    reply = done.choices[0].message.content or "?"
    params = {
        "chat_id": message["chat"]["id"],
        "text": reply,
        "reply_parameters": {"message_id": message["message_id"]},
    }
    async with session.post(
        f"{base}/sendMessage",
        data=orjson.dumps(params),
        headers={"Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as resp:
        await resp.read()


async def poll(
    session: aiohttp.ClientSession,
    llm: openai.AsyncOpenAI,
    api: str,
    token: str,
    started: asyncio.Event,
    tasks: set[asyncio.Task[None]],
) -> None:
    base = f"{api}/bot{token}"
    offset: int | None = None
    while True:
        params: dict[str, Any] = {"timeout": 25, "limit": 100}
        if offset is not None:
            params["offset"] = offset
        request = session.post(
            f"{base}/getUpdates",
            data=orjson.dumps(params),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=40),
        )
        started.set()
        async with request as resp:
            body = orjson.loads(await resp.read())
        for update in body.get("result") or []:
            offset = int(update["update_id"]) + 1
            task = asyncio.create_task(answer(session, llm, base, update))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def serve(args: argparse.Namespace, tokens: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    llm = openai.AsyncOpenAI(
        base_url=args.llm,
        api_key="sk-bench",
        max_retries=0,
        timeout=30,
        http_client=openai.DefaultAioHttpClient(),
    )
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = [asyncio.Event() for _ in tokens]
        pollers = [
            asyncio.create_task(poll(session, llm, args.api, t, e, tasks))
            for t, e in zip(tokens, started, strict=True)
        ]
        await asyncio.gather(*(e.wait() for e in started))
        print(orjson.dumps({"event": "baseline.ready"}).decode(), flush=True)
        await stop.wait()
        for task in [*pollers, *tasks]:
            task.cancel()
        await asyncio.gather(*pollers, *tasks, return_exceptions=True)
    await llm.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--api", required=True, help="the Bot API emulator's base URL")
    p.add_argument("--llm", required=True, help="the model's base URL (…/v1)")
    args = p.parse_args()
    tokens = [line.strip() for line in sys.stdin if line.strip()]
    import uvloop

    uvloop.run(serve(args, tokens))


if __name__ == "__main__":
    main()
