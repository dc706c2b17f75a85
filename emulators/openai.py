"""A local OpenAI-compatible server for tests, the demo and benchmarks.

`POST /v1/chat/completions` answers deterministically from the conversation:
"you said <last user message>; earlier you said <the one before>", with usage
tokens (words). A user message "/long N" gets an answer of N characters.

Faults for tests: `state.fail_next(kind, count, retry_after)` (or POST
/control/fault {"kind": "429"|"500"|"hang", "count": N (-1: until /control/recover),
"retry_after": s}) makes the next requests answer 429 with Retry-After, 500, or hang
until the client gives up. `state.latency_s` (or POST /control/latency {"seconds": s})
delays every answer, like a model thinking. `python -m emulators.openai --port 8082` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
from aiohttp import web

FaultKind = Literal["429", "500", "hang"]
KINDS: Final = ("429", "500", "hang")
_ROLES: Final = ("system", "developer", "user", "assistant", "tool")
_FILLER: Final = "lorem ipsum dolor sit amet, consectetur adipiscing elit.\n"


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    remaining: int  # -1: until recover()
    retry_after: float


@dataclass(slots=True)
class Seen:
    at: float  # monotonic: answered (after `latency_s`)
    status: int
    model: str
    messages: list[dict[str, Any]]
    started: float = 0.0  # monotonic: the request arrived


@dataclass(slots=True)
class LLMEmulatorState:
    requests: list[Seen] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    hangs: asyncio.Event = field(default_factory=asyncio.Event)  # set: hung requests end
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: prompts counting more tokens than this (as `usage` counts them) are rejected with
    #: 400 context_length_exceeded, like a real model's window (None: no limit)
    context_window: int | None = None
    #: every answer waits this long first (a model's thinking time; benchmarks)
    latency_s: float = 0.0
    #: requests received so far (answered, failed, hanging or still in their latency)
    started: int = 0

    def fail_next(self, kind: FaultKind, count: int = 1, retry_after: float = 1.0) -> None:
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}")
        self.faults.append(Fault(kind, count, retry_after))

    def recover(self) -> None:
        self.faults.clear()

    def count(self, status: int | None = None) -> int:
        return sum(1 for r in self.requests if status is None or r.status == status)

    async def wait_started(self, n: int) -> None:
        """Until `n` requests have arrived (answered or not)."""
        while self.started < n:
            await self.changed.wait()

    def note_started(self) -> None:
        self.started += 1
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_requests(self, n: int) -> None:
        """Until `n` requests have been answered (or started hanging)."""
        while len(self.requests) < n:
            await self.changed.wait()

    def take_fault(self) -> Fault | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault.remaining > 0:
            fault.remaining -= 1
            if fault.remaining == 0:
                self.faults.popleft()
        return fault

    def record(self, seen: Seen) -> None:
        self.requests.append(seen)
        self.changed.set()
        self.changed = asyncio.Event()


def answer(messages: list[dict[str, Any]]) -> str:
    """The deterministic reply to a conversation."""
    said = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
    last = said[-1] if said else ""
    if last.startswith("/long "):
        try:
            n = max(1, int(last.split()[1]))
        except ValueError:
            n = 5000
        return (_FILLER * (n // len(_FILLER) + 1))[:n]
    reply = f"you said {last}"
    if len(said) >= 2:
        reply += f"; earlier you said {said[-2]}"
    return reply


def _words(text: str) -> int:
    return len(text.split())


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(_words(str(m.get("content", ""))) + 3 for m in messages)


def completion_body(model: str, messages: list[dict[str, Any]], n: int) -> dict[str, Any]:
    reply = answer(messages)
    prompt = prompt_tokens(messages)
    done = _words(reply)
    return {
        "id": f"chatcmpl-emu-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
        },
    }


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _error(
    status: int,
    kind: str,
    message: str,
    headers: dict[str, str] | None = None,
    code: str | None = None,
) -> web.Response:
    return _json({"error": {"message": message, "type": kind, "code": code}}, status, headers)


STATE_KEY: Final = web.AppKey("state", LLMEmulatorState)


async def chat_completions(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = orjson.loads(await request.read())
        messages = body["messages"]
        model = str(body["model"])
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in _ROLES for m in messages
        ):
            raise TypeError(f"messages must be a list of {{role, content}} with role in {_ROLES}")
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return _error(400, "invalid_request_error", f"bad request: {exc}")
    state.note_started()
    started = time.monotonic()
    if state.latency_s > 0:
        await asyncio.sleep(state.latency_s)
    now = time.monotonic()
    window = state.context_window
    if window is not None and prompt_tokens(messages) > window:
        state.record(Seen(now, 400, model, messages, started))
        return _error(
            400,
            "invalid_request_error",
            f"this model's maximum context length is {window} tokens",
            code="context_length_exceeded",
        )
    fault = state.take_fault()
    if fault is None:
        state.record(Seen(now, 200, model, messages, started))
        return _json(completion_body(model, messages, len(state.requests)))
    if fault.kind == "429":
        state.record(Seen(now, 429, model, messages, started))
        return _error(
            429, "rate_limit_error", "slow down", {"Retry-After": f"{fault.retry_after:g}"}
        )
    if fault.kind == "500":
        state.record(Seen(now, 500, model, messages, started))
        return _error(500, "server_error", "the emulator was told to fail")
    state.record(Seen(now, 0, model, messages, started))  # hang: until the server closes
    await state.hangs.wait()
    return _error(503, "server_error", "shutting down")


async def control_fault(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    try:
        request.app[STATE_KEY].fail_next(
            body["kind"], int(body.get("count", 1)), float(body.get("retry_after", 1.0))
        )
    except (KeyError, TypeError, ValueError) as exc:
        return _error(400, "invalid_request_error", str(exc))
    return _json({"ok": True})


async def control_latency(request: web.Request) -> web.Response:
    try:
        seconds = float(orjson.loads(await request.read())["seconds"])
        if not 0 <= seconds <= 600:
            raise ValueError("seconds must be within 0..600")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return _error(400, "invalid_request_error", str(exc))
    request.app[STATE_KEY].latency_s = seconds
    return _json({"ok": True})


async def control_recover(request: web.Request) -> web.Response:
    request.app[STATE_KEY].recover()
    return _json({"ok": True})


async def control_stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    statuses: dict[str, int] = {}
    for r in state.requests:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    return _json({"requests": len(state.requests), "by_status": statuses})


def make_app(state: LLMEmulatorState) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/control/fault", control_fault)
    app.router.add_post("/control/recover", control_recover)
    app.router.add_post("/control/latency", control_latency)
    app.router.add_get("/control/stats", control_stats)
    return app


@dataclass(frozen=True, slots=True)
class RunningLLMEmulator:
    state: LLMEmulatorState
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """What `openai.base_url` should be."""
        return f"http://{self.host}:{self.port}/v1"


@asynccontextmanager
async def open_llm_emulator(
    host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningLLMEmulator]:
    """Serve on the current loop for the block; `port=0` picks a free port."""
    state = LLMEmulatorState()
    runner = web.AppRunner(make_app(state), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])
    try:
        yield RunningLLMEmulator(state, host, bound)
    finally:
        state.hangs.set()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llm-emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with open_llm_emulator(args.host, args.port) as emu:
            print(f"LLM emulator on {emu.base_url}", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
