"""What the webhook ingress answers (bots/telegram/webhook_ingress.py) and what its HTTP
server (bots/telegram/webhook_http.py) asks of it. A `Reply` is encoded once and reused:
most answers are one of a handful (200, the 401, a 429 with its Retry-After)."""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class Reply:
    """A complete response but for its end of head (`Connection: close` may go there)."""

    __slots__ = ("body", "head", "status")

    def __init__(
        self, status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status = status
        self.body = body
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
        if body:
            lines.append(b"Content-Type: application/json\r\n")
        lines.append(b"Content-Length: %d\r\n" % len(body))
        lines += [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers]
        self.head = b"".join(lines)

    def encoded(self, close: bool) -> bytes:
        return self.head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + self.body


class Answerer(Protocol):
    """The ingress: `answer` gets every parsed request, `refused` makes the server's own
    refusals (400, 408, 413, 431), counted like the ingress's."""

    max_body: int

    def answer(
        self, path: bytes, method: bytes, secret: bytes | None, body: bytes
    ) -> Reply | asyncio.Future[Reply]: ...

    def refused(self, status: int, message: str) -> Reply: ...
