"""The long poll's own HTTP/1.1 keep-alive connection: one per bot, getUpdates only.

Why not aiohttp here: a parked aiohttp request holds ~11.5 KiB (connector, request,
response, stream reader, timers; measured with bench/fleet_memory.py), and every bot
parks one for up to 50 s. This connection parks a protocol object, a transport and a
future. Every other Bot API call still goes through aiohttp. The protocol subset is
what a Bot API server sends: a status line, headers, then a body framed by
Content-Length or chunked encoding, over TCP or TLS, directly (Happy Eyeballs) or
through an HTTP(S)/SOCKS5 proxy (bots/telegram/net.py opens the connection).
"""

from __future__ import annotations

import asyncio
from typing import Final, cast
from urllib.parse import urlsplit

from bots.telegram.net import NetOptions, TunnelProtocol, open_transport

_MAX_HEAD: Final = 64 * 1024
_MAX_BODY: Final = 64 * 1024 * 1024
#: direct, verified TLS, default timeouts (tests and one-off clients)
DIRECT: Final = NetOptions()


class PollProtocolError(Exception):
    """The server's answer is not HTTP/1.1 we understand, or the connection broke."""


class _Connection(TunnelProtocol):
    """One keep-alive connection. At most one request in flight (the actor's poll)."""

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
        except PollProtocolError as exc:
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
        self._fail(PollProtocolError(f"connection closed ({type(exc).__name__ if exc else 'EOF'})"))

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
                raise PollProtocolError("response head too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise PollProtocolError("not an HTTP/1.x status line")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        self._close_after = parts[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                if not value.isdigit():
                    raise PollProtocolError("bad Content-Length")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.endswith(b"chunked")
            elif name == b"connection":
                self._close_after = value == b"close"
        start = end + 4
        if chunked:
            body = _dechunk(buf, start)
            return None if body is None else (status, body)
        if length is None:
            raise PollProtocolError("no Content-Length and not chunked")
        if length > _MAX_BODY:
            raise PollProtocolError("response body too large")
        if len(buf) - start < length:
            return None
        return status, bytes(buf[start : start + length])


def _dechunk(buf: bytearray, pos: int) -> bytes | None:
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
            raise PollProtocolError("bad chunk size") from None
        if len(out) + size > _MAX_BODY:
            raise PollProtocolError("response body too large")
        start = eol + 2
        if size == 0:
            return bytes(out) if buf.find(b"\r\n\r\n", eol) >= 0 else None  # after trailers
        if len(buf) < start + size + 2:
            return None
        out += buf[start : start + size]
        pos = start + size + 2


class LongPoll:
    """A bot's getUpdates connection. Runs in the actor's task."""

    __slots__ = ("_conn", "_head", "_host", "_net", "_port", "_tls")

    def __init__(self, api_base: str, token_secret: str, net: NetOptions = DIRECT) -> None:
        url = urlsplit(api_base.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("telegram.api_base must be an http(s) URL")
        self._tls = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        self._net = net
        host_header = url.netloc.rsplit("@", 1)[-1]
        self._head = (
            f"POST {url.path}/bot{token_secret}/getUpdates HTTP/1.1\r\n"
            f"Host: {host_header}\r\nContent-Type: application/json\r\n"
            "Connection: keep-alive\r\nContent-Length: "
        ).encode()
        self._conn: _Connection | None = None

    @property
    def net(self) -> NetOptions:
        return self._net

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        """One getUpdates exchange. Raises OSError, TimeoutError or PollProtocolError.

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
                except PollProtocolError:
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

    async def _connect(self) -> _Connection:
        _, conn = await open_transport(_Connection, self._host, self._port, self._tls, self._net)
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
