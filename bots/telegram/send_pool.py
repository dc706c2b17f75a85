"""The worker's pool of keep-alive connections for every Bot API call but the long poll.

Why not aiohttp's client here: it was the largest share of a worker's CPU at 1,000 echo
bots (~18% of samples in `ClientSession._request` alone); a send on this pool is one write
and one parse on bots/telegram/http1.py's connection (bench/RESULTS.md, "The send pool").
aiohttp stays for the rare multipart call (setWebhook with a certificate).

One pool per way out (server, proxy, TLS), shared by every bot going that way: bounded
(`telegram.connections_per_worker`), so a burst of 5,000 replies reuses connections instead
of opening 5,000; waiting for a free connection has no timeout (a burst is not Telegram
being slow), the connect and the answer each have one. A request is never sent twice here:
a connection that breaks after the request left raises, and the caller decides (BotApi.send
retries a reply, a broadcast does not). Runs in the loop that created it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from bots.telegram.http1 import HttpConnection, api_server
from bots.telegram.net import NetOptions, ProxyFailed, open_transport


class ConnectFailed(OSError):
    """The connection could not be opened: the request was not sent (safe to send again;
    bots/telegram/errors.py's NOT_SENT names it)."""


class SendPool:
    """Bounded keep-alive connections to one Bot API server, reused most-recent first."""

    __slots__ = (
        "_closed",
        "_idle",
        "_keepalive_s",
        "_limit",
        "_open",
        "_server",
        "_waiters",
        "net",
    )

    def __init__(self, api_base: str, net: NetOptions, limit: int, keepalive_s: float) -> None:
        self._server = api_server(api_base)  # ValueError for anything but an http(s) URL
        self.net = net
        self._limit = limit if limit > 0 else 1 << 30  # 0: unbounded, as the setting says
        self._keepalive_s = keepalive_s
        #: (idle since, connection), the most recently used last
        self._idle: deque[tuple[float, HttpConnection]] = deque()
        #: connections counted against the limit: idle, in use and being opened
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def head(self, token_secret: str) -> bytes:
        """The start of every request line of one bot; the method name follows it."""
        return self._server.bot_path(token_secret)

    @property
    def connections(self) -> int:
        return self._open

    @property
    def waiting(self) -> int:
        """Requests waiting for a connection (a burst past the bound)."""
        return len(self._waiters)  # a woken waiter leaves it, a cancelled one removes itself

    async def post(
        self, head: bytes, method: str, body: bytes, timeout: float
    ) -> tuple[int, bytes]:
        """One request: `head` from `head()`, then `method`. Returns (status, body).

        Raises ConnectFailed (nothing sent), ProxyFailed, HttpProtocolError, OSError or
        TimeoutError (the answer did not come within `timeout`: it may have been sent).
        """
        tail = self._server.tail
        data = b"".join((head, method.encode(), tail, b"%d\r\n\r\n" % len(body), body))
        conn = await self._acquire(timeout)
        loop = asyncio.get_running_loop()
        fut = conn.request(data)
        # a timer handle on the answer's future: cheaper per request than asyncio.timeout
        timer = loop.call_later(timeout, _expire, fut)
        try:
            answer = await fut
        except BaseException:
            conn.close()  # the answer may still come: this connection is out of step
            self._release(conn)
            raise
        finally:
            timer.cancel()
        self._release(conn)
        return answer

    async def _acquire(self, timeout: float) -> HttpConnection:
        first = True
        while True:
            idle = self._idle
            while idle:
                since, conn = idle.pop()
                if conn.alive and time.monotonic() - since < self._keepalive_s:
                    return conn
                conn.close()
                self._open -= 1
            if self._closed:
                raise ConnectFailed("the send pool is closed")
            if self._open < self._limit:
                self._open += 1
                try:
                    return await self._connect(timeout)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            fut = asyncio.get_running_loop().create_future()
            # a waiter woken but beaten to the connection keeps its place at the front
            if first:
                self._waiters.append(fut)
            else:
                self._waiters.appendleft(fut)
            first = False
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._wake()  # it was handed a turn it will not take: pass it on
                else:
                    self._discard(fut)
                raise

    async def _connect(self, timeout: float) -> HttpConnection:
        try:
            async with asyncio.timeout(timeout):
                srv = self._server
                _, conn = await open_transport(
                    HttpConnection, srv.host, srv.port, srv.tls, self.net
                )
        except ProxyFailed:
            raise  # an OSError too, but its message names the proxy: keep it
        except (OSError, TimeoutError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else ""
            raise ConnectFailed(reason or type(exc).__name__) from None
        return conn

    def _release(self, conn: HttpConnection) -> None:
        if conn.alive and not self._closed:
            now = time.monotonic()
            self._idle.append((now, conn))
            # drop one long-idle connection from the cold end, so a quiet pool shrinks
            since, oldest = self._idle[0]
            if now - since >= self._keepalive_s or not oldest.alive:
                self._idle.popleft()
                oldest.close()
                self._open -= 1
        else:
            conn.close()
            self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _discard(self, fut: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(fut)
        except ValueError:
            pass

    def close(self) -> None:
        """Close every idle connection now and each busy one when its request ends."""
        self._closed = True
        while self._idle:
            _, conn = self._idle.pop()
            conn.close()
            self._open -= 1
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # it finds the pool closed and raises


def _expire(fut: asyncio.Future[tuple[int, bytes]]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("no answer in time"))
