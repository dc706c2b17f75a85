"""The emulator's webhook POSTs: one bot's keep-alive HTTP/1.1 connections, like the Bot
API server's WebhookActor keeps (at most the bot's `max_connections`, which the delivery
loop already bounds by its POSTs in flight). An asyncio Protocol with `httptools`
parsing the answer, in place of an aiohttp client request per update: on a 2-core
machine the emulator shares the cores with the daemon under test, and aiohttp's request
and response objects made webhook delivery cost it ~1.8× what long polling did. Not the
daemon's own client connection (bots/telegram/http1.py): the emulator stands in for
Telegram and shares no code with the daemon it tests.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final
from urllib.parse import urlsplit

import httptools

#: Retry-After's header name, lower-cased as compared
RETRY_AFTER: Final = b"retry-after"


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes | None, bool]] | None = None
        self.retry_after: bytes | None = None
        self.answered_bytes = False  # a byte of the answer came (a reused one did not die)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionResetError("webhook connection closed"))

    def data_received(self, data: bytes) -> None:
        self.answered_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad answer: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == RETRY_AFTER:
            self.retry_after = value

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            keep = self.parser.should_keep_alive()
            waiter.set_result((self.parser.get_status_code(), self.retry_after, keep))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes | None, bool]]:
        assert self.transport is not None
        self.retry_after = None
        self.answered_bytes = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


class WebhookClient:
    """POSTs to one webhook URL over reused connections."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        ).encode()
        self._idle: list[_Conn] = []

    async def post(
        self, body: bytes, secret_header: bytes, timeout: float
    ) -> tuple[int, bytes | None]:
        """(status, Retry-After as sent or None). Raises OSError/TimeoutError/ConnectionError
        when no answer came."""
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (self._head, secret_header, len(body), body)
        async with asyncio.timeout(timeout):
            while self._idle:
                conn = self._idle.pop()
                if conn.transport is None or conn.transport.is_closing():
                    continue
                try:
                    return await self._exchange(conn, request)
                except ConnectionError:
                    if conn.answered_bytes:
                        raise
                    # closed by the server while idle (its keep-alive timeout): a new one
            conn = await self._connect()
            return await self._exchange(conn, request)

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.tls else None
        _, conn = await loop.create_connection(_Conn, self.host, self.port, ssl=context)
        return conn

    async def _exchange(self, conn: _Conn, request: bytes) -> tuple[int, bytes | None]:
        try:
            status, retry_after, keep = await conn.send(request)
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()  # an answer half read or never: not reusable
            raise
        if keep and conn.transport is not None:
            self._idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()
        return status, retry_after

    def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
