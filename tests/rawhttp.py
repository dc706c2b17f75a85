"""A scripted raw HTTP/1.1 server on 127.0.0.1 for the client connections' tests
(tests/unit/test_longpoll.py, test_send_pool.py; the `server` fixture is in
tests/unit/conftest.py)."""

from __future__ import annotations

import asyncio


class RawServer:
    """Answers each request on a connection with `answers[request number]` bytes."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        self.answers: list[bytes | None] = []  # None: close the connection instead
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0) if self.answers else None
                if answer is None:
                    break
                if answer == b"hang":
                    await asyncio.sleep(3600)
                close = answer.endswith(b"<close>")
                writer.write(answer.removesuffix(b"<close>"))
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
