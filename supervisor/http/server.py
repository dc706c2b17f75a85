"""The master's HTTP listener, hardened against slow and many clients.

Runs in the master's event loop. aiohttp's own server, with three changes:

* **header and idle timeout** (`http.idle_timeout_s`): a connection that has not sent a
  complete request head within that time of connecting, or of its last response, is
  closed (aiohttp's keep-alive timer, which also runs before the first request);
  a body then has `_BODY_TIMEOUT_S` in the admin API;
* **connection cap** (`http.max_connections`): a connection beyond it is closed at once,
  before a byte is read, so idle sockets cannot exhaust file descriptors;
* **malformed requests** are answered `400` with a fixed body and logged as one WARNING
  line with the error's type: aiohttp would echo the raw request line or header (which
  may hold a key) in the reply and log it with a traceback at ERROR.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = structlog.get_logger(__name__)


class _Handler(RequestHandler):
    """aiohttp's connection protocol, answering malformed requests without echoing them."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        log.warning("http.bad_request", status=status, error=type(exc).__name__)
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        resp = web.Response(status=status, text=f"{status} {phrase}\n")
        resp.force_close()
        return resp


class _Guard(asyncio.Protocol):
    """Stands in for a connection beyond the cap: closes it as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class HardenedSite(web.BaseSite):
    """A TCP site whose connections are `_Handler`s, at most `max_connections` at once."""

    __slots__ = ("_host", "_max_connections", "_port", "refused")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._max_connections = max_connections
        #: connections closed because of the cap, since start
        self.refused = 0

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    def _protocol(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self._max_connections:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, 8 …: never a flood of lines
                log.warning(
                    "http.connection_cap", limit=self._max_connections, refused=self.refused
                )
            return _Guard()
        return _Handler(server, loop=asyncio.get_running_loop(), **server._kwargs)

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, reuse_address=True, backlog=128
        )


def make_runner(app: web.Application, *, idle_timeout_s: float) -> web.AppRunner:
    """An AppRunner with the idle timeout and no access log (the master logs no requests)."""
    options: dict[str, Any] = {"keepalive_timeout": idle_timeout_s, "access_log": None}
    return web.AppRunner(app, **options)
