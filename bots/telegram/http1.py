"""The one HTTP/1.1 client connection of the Bot API path: the long poll's and the send pool's.

Why not aiohttp: a parked aiohttp request holds ~11.5 KiB (bench/fleet_memory.py), and a
send through aiohttp's client costs ~3x the CPU of a write and a parse on this protocol
(bench/RESULTS.md, "The send pool"). The protocol subset is what a Bot API server sends:
a status line, headers, then a body framed by Content-Length or chunked encoding, over
TCP or TLS, directly or through a proxy (bots/telegram/net.py opens the connection).
Runs in the loop of the worker (or CLI) that opened it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, cast
from urllib.parse import urlsplit

from bots.telegram.net import TunnelProtocol

_MAX_HEAD: Final = 64 * 1024
_MAX_BODY: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ApiServer:
    """A Bot API server as `telegram.api_base` names it; one instance per URL per process
    (`api_server`), shared by every bot's long poll and the send pools."""

    tls: bool
    host: str
    port: int
    #: the URL's path (a local server may sit under one), without a trailing slash
    path: str
    #: what follows a request's path in its head, up to the Content-Length value
    tail: bytes

    def bot_path(self, token_secret: str) -> bytes:
        """The start of every request line of one bot; the method name follows it."""
        return f"POST {self.path}/bot{token_secret}/".encode()


@lru_cache(maxsize=64)
def api_server(api_base: str) -> ApiServer:
    """Raises ValueError for anything but an http(s) URL with a host."""
    url = urlsplit(api_base.rstrip("/"))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError("telegram.api_base must be an http(s) URL")
    tls = url.scheme == "https"
    host_header = url.netloc.rsplit("@", 1)[-1]
    tail = (
        f" HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
        "Connection: keep-alive\r\nContent-Length: "
    ).encode()
    return ApiServer(tls, url.hostname, url.port or (443 if tls else 80), url.path, tail)


class HttpProtocolError(Exception):
    """The server's answer is not HTTP/1.1 we understand, or the connection broke."""


class HttpConnection(TunnelProtocol):
    """One keep-alive connection, at most one request in flight: a bot's long poll, or one
    send at a time from the worker's send pool."""

    __slots__ = ("_buf", "_close_after", "_waiter", "got_bytes", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.anchor: object = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._close_after = False
        self.got_bytes = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport; it quacks like one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self._buf += data
        try:
            answer = self._parse()
        except HttpProtocolError as exc:
            self._fail(exc)
            return
        if answer is not None:
            self._buf = bytearray()  # a 100-update batch must not stay allocated while idle
            if self._close_after:
                self.close()
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(HttpProtocolError(f"connection closed ({type(exc).__name__ if exc else 'EOF'})"))

    # -- use ----------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.got_bytes = False
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _fail(self, exc: Exception) -> None:
        self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                raise HttpProtocolError("response head too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpProtocolError("not an HTTP/1.x status line")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        self._close_after = parts[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                if not value.isdigit():
                    raise HttpProtocolError("bad Content-Length")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.endswith(b"chunked")
            elif name == b"connection":
                self._close_after = value == b"close"
        start = end + 4
        if chunked:
            body = dechunk(buf, start)
            return None if body is None else (status, body)
        if length is None:
            raise HttpProtocolError("no Content-Length and not chunked")
        if length > _MAX_BODY:
            raise HttpProtocolError("response body too large")
        if len(buf) - start < length:
            return None
        return status, bytes(buf[start : start + length])


def dechunk(buf: bytearray, pos: int) -> bytes | None:
    """The body of a complete chunked message in `buf` from `pos`, or None if incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpProtocolError("bad chunk size") from None
        if len(out) + size > _MAX_BODY:
            raise HttpProtocolError("response body too large")
        start = eol + 2
        if size == 0:
            return bytes(out) if buf.find(b"\r\n\r\n", eol) >= 0 else None  # after trailers
        if len(buf) < start + size + 2:
            return None
        out += buf[start : start + size]
        pos = start + size + 2
