"""The long poll's own keep-alive connection: one per bot, getUpdates only.

Why not aiohttp here: a parked aiohttp request holds ~11.5 KiB (connector, request,
response, stream reader, timers; measured with bench/fleet_memory.py), and every bot
parks one for up to 50 s. This connection (bots/telegram/http1.py) parks a protocol
object, a transport and a future. Sends share the worker's pool of the same
connections (bots/telegram/send_pool.py).
"""

from __future__ import annotations

import asyncio
from typing import Final

from bots.telegram.http1 import HttpConnection, HttpProtocolError, api_server
from bots.telegram.net import NetOptions, open_transport

#: direct, verified TLS, default timeouts (tests and one-off clients)
DIRECT: Final = NetOptions()


class LongPoll:
    """A bot's getUpdates connection. Runs in the actor's task."""

    __slots__ = ("_conn", "_head", "_net", "_server")

    def __init__(self, api_base: str, token_secret: str, net: NetOptions = DIRECT) -> None:
        self._server = api_server(api_base)
        self._net = net
        self._head = self._server.bot_path(token_secret) + b"getUpdates" + self._server.tail
        self._conn: HttpConnection | None = None

    @property
    def net(self) -> NetOptions:
        return self._net

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        """One getUpdates exchange. Raises OSError, TimeoutError or HttpProtocolError.

        A kept-alive connection the server closed while we were idle is retried once on
        a fresh one (nothing was received, so nothing was confirmed or lost).
        """
        data = self._head + str(len(body)).encode() + b"\r\n\r\n" + body
        async with asyncio.timeout(timeout):
            for attempt in (0, 1):
                reused = self._conn is not None and self._conn.alive
                conn = self._conn if reused else await self._connect()
                assert conn is not None
                try:
                    return await conn.request(data)
                except HttpProtocolError:
                    if reused and attempt == 0 and not conn.got_bytes:
                        continue
                    raise
                except BaseException:
                    conn.close()  # cancelled or timed out: the server drops the pending poll
                    raise
        raise AssertionError("unreachable")

    async def connect(self, timeout: float) -> None:
        """Open the connection now (a no-op while one is alive): an actor starting among
        thousands connects under its worker's start gate, then long-polls outside it."""
        if self._conn is None or not self._conn.alive:
            async with asyncio.timeout(timeout):
                await self._connect()

    async def _connect(self) -> HttpConnection:
        srv = self._server
        _, conn = await open_transport(HttpConnection, srv.host, srv.port, srv.tls, self._net)
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
