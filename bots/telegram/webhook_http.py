"""The webhook ingress's HTTP/1.1 connections: an asyncio Protocol over `httptools` (llhttp,
the parser uvicorn uses), in place of aiohttp's server, whose request and response
objects, per-connection task and header multidicts were most of the master's CPU per
update (bench/webhook.py). This server does only what the ingress needs: it keeps the
path, the method, one header and the body, and hands them to `Answerer.answer`.

* Keep-alive and pipelining: every request is answered as soon as it is parsed (so the
  appends of pipelined requests share round trips), responses go out in request order.
  More than PIPELINE_MAX answers waiting, or a peer that does not read its responses:
  reading pauses until they are out.
* Limits: head (request line + headers) over HEAD_MAX bytes → 431, a body over
  `max_body` → 413, anything llhttp rejects (or an Upgrade/CONNECT) → 400; each closes
  the connection after its answer. Nothing a peer sends escapes `data_received`.
* Slow peers: a request must arrive whole within REQUEST_S of its first byte (408), an
  idle connection is closed after KEEPALIVE_S, one whose peer stops reading after
  WRITE_S (the server's sweep, bots/telegram/webhook_server.py, checks them).
* Closing after an answer lingers (LINGER_S): our side is shut first, so a peer still
  sending reads the answer instead of a reset.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final, Protocol

import httptools
import structlog

from bots.telegram.webhook_reply import Answerer, Reply

log = structlog.get_logger(__name__)

#: request line + headers, bytes (aiohttp's line and field limit)
HEAD_MAX: Final = 8190
#: a started request must be complete within this (slowloris)
REQUEST_S: Final = 30.0
#: an idle keep-alive connection is closed after this (aiohttp's default is 75 s)
KEEPALIVE_S: Final = 75.0
#: a peer that reads none of its responses for this long is cut off
WRITE_S: Final = 30.0
#: a closing connection's peer gets this long to read our last answer and close
LINGER_S: Final = 2.0
#: answers waiting on one connection before it stops reading
PIPELINE_MAX: Final = 64

SECRET_HEADER_LOWER: Final = b"x-telegram-bot-api-secret-token"
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

_Answer = Reply | asyncio.Future[Reply]


class Listener(Protocol):
    """The server a connection belongs to (bots/telegram/webhook_server.py)."""

    answerer: Answerer
    loop: asyncio.AbstractEventLoop
    draining: bool

    def joined(self, conn: Connection) -> None: ...

    def lost(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection. Every parser callback is plain Python that cannot raise."""

    def __init__(self, server: Listener) -> None:
        self.server = server
        self.answerer = server.answerer
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.out: deque[_Answer] = deque()
        self.in_message = False  # a request's first byte came, not its end
        self.closing = False  # answer what is queued, then close; parse nothing more
        self.reading_paused = False
        self.writing_paused = False
        #: when the state the sweep times out began: idle, a request begun, writes paused
        self.idle_since = self.begun_at = self.paused_at = self.loop.time()
        self.lingering = False  # closing: our side is shut, what comes is discarded
        self.upgrade = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.secret: bytes | None = None
        self.in_head = False
        self.expect_continue = False
        self.body: list[bytes] = []
        self.head_size = 0
        self.head_buffered = 0
        self.body_size = 0
        self.too_big = 0  # 413 or 431 once the request's end is not worth waiting for

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.joined(self)
        if self.server.draining:
            self.closing = True
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.lost(self)
        self.transport = None
        for pending in self.out:
            if isinstance(pending, asyncio.Future):
                pending.remove_done_callback(self._on_answer)
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrade is not supported")
        except httptools.HttpParserError:
            self._fail(self.too_big or 400, "malformed request")
        else:
            if self.in_head:
                # httptools keeps a header whole until its end: a head that does not end
                # must not grow it without bound (on_url/on_header count it exactly)
                self.head_buffered += len(data)
                if self.head_buffered > 4 * HEAD_MAX:
                    self._fail(431, "request head too large")

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.paused_at = self.loop.time()
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if len(self.out) < PIPELINE_MAX:
            self._resume_reading()

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = self.in_head = True
        self.begun_at = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        name = name.lower()
        if name == SECRET_HEADER_LOWER:
            # given twice: neither is trusted (an empty secret never matches)
            self.secret = value if self.secret is None else b""
        elif name == b"content-length":
            if value.strip().isdigit() and int(value) > self.answerer.max_body:
                self.too_big = 413  # refused before the body is sent
                raise httptools.HttpParserError("body too large")
        elif name == b"expect":
            self.expect_continue = value.strip().lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.upgrade = self.parser.should_upgrade()
        if self.expect_continue and not self.out and self.transport is not None:
            self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.answerer.max_body:
            self.too_big = 413
            raise httptools.HttpParserError("body too large")  # ends feed_data
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        if not self.parser.should_keep_alive():
            self.closing = True
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        secret = self.secret
        self._reset()
        if self.upgrade:
            self.in_message = True
            raise httptools.HttpParserUpgrade("not supported")  # _fail: 400
        try:
            answer = self.answerer.answer(path, method, secret, body)
        except Exception as exc:  # noqa: BLE001 - one request's bug must not end the server
            log.error("webhook.answer_error", error=type(exc).__name__, detail=str(exc)[:200])
            answer = Reply(500)
        self._queue(answer)
        if self.closing:
            # llhttp would parse what follows; a closing connection takes nothing more
            raise httptools.HttpParserError("connection closing")

    # -- answers ------------------------------------------------------------------------

    def _count_head(self, n: int) -> None:
        self.head_size += n
        if self.head_size > HEAD_MAX:
            self.too_big = 431
            raise httptools.HttpParserError("head too large")

    def _fail(self, status: int, message: str) -> None:
        if self.closing and not self.in_message:
            self._flush()  # the parser was stopped on purpose after a closing request
            return
        self.closing = True
        self.in_message = False
        self._queue(self.answerer.refused(status, message))

    def _queue(self, answer: _Answer) -> None:
        self.out.append(answer)
        if isinstance(answer, asyncio.Future) and not answer.done():
            answer.add_done_callback(self._on_answer)
            if len(self.out) >= PIPELINE_MAX:
                self._pause_reading()
            return
        self._flush()

    def _on_answer(self, _: asyncio.Future[Reply]) -> None:
        self._flush()

    def _flush(self) -> None:
        out, transport = self.out, self.transport
        if transport is None:
            return
        chunks: list[bytes] = []
        while out:
            head = out[0]
            if isinstance(head, asyncio.Future):
                if not head.done():
                    break
                reply = head.result() if _answered(head) else Reply(500)
            else:
                reply = head
            out.popleft()
            chunks.append(reply.encoded(self.closing and not out))
        if chunks:
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if out:
            return
        if self.closing:
            self._linger()
            return
        self.idle_since = self.loop.time()
        if self.reading_paused and not self.writing_paused:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closing:
            self.reading_paused = False
            self.transport.resume_reading()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _linger(self) -> None:
        """Close after our last answer: shut our side and discard what still comes until
        the peer closes (or LINGER_S), since closing a socket with unread data resets the
        connection, and the peer may lose the answer (a 413 while it is still sending)."""
        transport = self.transport
        if transport is None or self.lingering:
            return
        self.lingering = True
        self.paused_at = self.loop.time()
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    # -- the server's sweep and shutdown -------------------------------------------------

    def expired(self, now: float) -> None:
        if self.transport is None:
            return
        if self.lingering:
            if now - self.paused_at >= LINGER_S:
                self.transport.abort()
        elif self.writing_paused:
            if now - self.paused_at >= WRITE_S:
                self.transport.abort()
        elif self.in_message:
            if now - self.begun_at >= REQUEST_S:
                self._fail(408, "request not complete in time")
        elif not self.out and now - self.idle_since >= KEEPALIVE_S:
            self._close()  # idle keep-alive

    def drain(self) -> None:
        # a request not yet whole is not waited for: unanswered, Telegram sends it again
        self.closing = True
        if not self.out:
            self._close()


def _answered(answer: asyncio.Future[Reply]) -> bool:
    """Whether a done answer holds a reply; a cancelled or failed one is a 500, logged."""
    if answer.cancelled():
        log.error("webhook.answer_error", error="CancelledError")
        return False
    exc = answer.exception()
    if exc is not None:
        log.error("webhook.answer_error", error=type(exc).__name__, detail=str(exc)[:200])
        return False
    return True
