"""HTTP front of the emulator: `EmulatorServer` and the entry points `open_emulator()`,
`serve()` and `run_emulator()`.

A single low-level aiohttp handler (no router, no middlewares, no access log)
dispatches on the path: `/bot<token>/<method>` to bot_routes.py, `/control/...` to
control_routes.py; bodies are orjson. Handler cancellation is on, so a client that
hangs up during a long poll cancels its handler, whose `finally` drops the pending
future.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog
from aiohttp import web

from emulators.telegram.bot_routes import BotRoutes
from emulators.telegram.callbacks import Interactions
from emulators.telegram.control_routes import ControlRoutes
from emulators.telegram.http_io import result_response
from emulators.telegram.limits import LimitSpec, RateLimits
from emulators.telegram.results import NOT_FOUND
from emulators.telegram.sessions import ServerSessions
from emulators.telegram.state import EmulatorState
from emulators.telegram.webhooks import WebhookPolicy, WebhookSender

if TYPE_CHECKING:
    from emulators.telegram.control import EmulatorControl

log = structlog.get_logger(__name__)

#: Largest request body accepted (bulk inject of ~100k messages).
MAX_BODY: Final = 64 * 1024 * 1024


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (thousands of long polls need fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


class EmulatorServer:
    """Serves one `EmulatorState` over HTTP."""

    def __init__(self, state: EmulatorState, webhook_policy: WebhookPolicy | None = None) -> None:
        self.state = state
        self.webhooks = WebhookSender(webhook_policy)
        state.on_webhook = self.webhooks.notify
        self._web: web.Server | None = None
        self._server: asyncio.Server | None = None
        self.port = 0
        self.interactions = ia = Interactions(state)
        #: logOut / close (emulators/telegram/sessions.py); tests may shorten its windows
        self.sessions = ServerSessions(state)
        self.bot_routes = BotRoutes(state, ia, self.sessions)
        self.control_routes = ControlRoutes(state, self.webhooks, ia)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str, port: int, *, backlog: int = 8192) -> int:
        loop = asyncio.get_running_loop()
        self._web = web.Server(
            self.handle,
            request_factory=self._make_request,
            handler_cancellation=True,
            access_log=None,
            keepalive_timeout=75.0,
        )
        self._server = await loop.create_server(
            self._web, host, port, backlog=backlog, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def _make_request(
        self,
        message: Any,
        payload: Any,
        protocol: Any,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # Bulk /control/inject bodies exceed aiohttp's 1 MiB default.
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=MAX_BODY,
        )

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            self._server.close()
        self.state.close()  # answer pending long polls with []
        await self.webhooks.close()
        if self._web is not None:
            await asyncio.sleep(0)  # let those answers reach their handlers
            self._web.pre_shutdown()  # close idle keep-alive connections
            await self._web.shutdown(grace)
        if self._server is not None:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), grace)
        self._server = None
        self._web = None

    # ------------------------------------------------------------------ dispatch

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/bot"):
            return await self.bot_routes.handle(request, path)
        if path.startswith("/control/"):
            return await self.control_routes.handle(request, path[9:])
        return result_response(NOT_FOUND)


# --------------------------------------------------------------------------- entry points


@dataclass(slots=True)
class RunningEmulator:
    """An emulator serving in this process (from `open_emulator`)."""

    host: str
    port: int
    state: EmulatorState
    server: EmulatorServer

    @property
    def base_url(self) -> str:
        """The Bot API base to give bots (`{base_url}/bot<token>/<method>`)."""
        return f"http://{self.host}:{self.port}"

    def control(self, timeout: float = 10.0) -> EmulatorControl:
        from emulators.telegram.control import EmulatorControl

        return EmulatorControl(self.base_url, timeout=timeout)


@asynccontextmanager
async def open_emulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    per_bot: LimitSpec = "30/1",
    per_chat: LimitSpec = "1/1",
    per_group: LimitSpec = "20/60",
    rate_limits: bool = True,
    sent_log_limit: int = 1_000,
    webhook_policy: WebhookPolicy | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Run an emulator on the current loop for the duration of the block.

    `port=0` picks a free port. A limit of `None` disables it; `rate_limits=False`
    disables all three.
    """
    raise_nofile_limit()
    limits = RateLimits.of(per_bot, per_chat, per_group, enabled=rate_limits)
    state = EmulatorState(limits, sent_log_limit=sent_log_limit)
    server = EmulatorServer(state, webhook_policy)
    bound = await server.start(host, port)
    try:
        yield RunningEmulator(host, bound, state, server)
    finally:
        await server.stop()


async def serve(
    host: str,
    port: int,
    limits: RateLimits,
    *,
    sent_log_limit: int = 1_000,
    on_ready: Callable[[str, int], Awaitable[None] | None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation)."""
    nofile = raise_nofile_limit()
    state = EmulatorState(limits, sent_log_limit=sent_log_limit)
    server = EmulatorServer(state)
    bound = await server.start(host, port)
    log.info("emulator.listening", host=host, port=bound, nofile=nofile, **limits.as_dict())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            maybe = on_ready(host, bound)
            if maybe is not None:
                await maybe
        await stop.wait()
    finally:
        started = time.monotonic()
        await server.stop()
        log.info("emulator.stopped", seconds=round(time.monotonic() - started, 3))


def run_emulator(
    host: str,
    port: int,
    *,
    per_bot: LimitSpec = "30/1",
    per_chat: LimitSpec = "1/1",
    per_group: LimitSpec = "20/60",
    rate_limits: bool = True,
    sent_log_limit: int = 1_000,
    on_ready: Callable[[str, int], Awaitable[None] | None] | None = None,
) -> None:
    """Blocking entry point (`python -m emulators.telegram`, `botvisor emulator`). Uses uvloop
    when installed. `on_ready(host, port)` is called once the socket is bound."""
    limits = RateLimits.of(per_bot, per_chat, per_group, enabled=rate_limits)
    coro = serve(host, port, limits, sent_log_limit=sent_log_limit, on_ready=on_ready)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
