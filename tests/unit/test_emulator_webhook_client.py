"""The emulator's webhook client (emulators/telegram/webhook_client.py): connections kept
alive and reused, one the server closed while idle replaced without a failed POST, the
status and Retry-After read, no answer an error. The server is the ingress's HTTP server
with a table of answers."""

from __future__ import annotations

import asyncio

import pytest

from bots.telegram import webhook_http
from bots.telegram.webhook_http import Connection
from bots.telegram.webhook_reply import Reply
from bots.telegram.webhook_server import IngressServer
from emulators.telegram.webhook_client import WebhookClient

SECRET_LINE = b"X-Telegram-Bot-Api-Secret-Token: abc\r\n"


class Table:
    max_body = 1 << 20

    def __init__(self) -> None:
        self.reply = Reply(200)
        self.got: list[tuple[bytes, bytes | None, bytes]] = []

    def answer(
        self, path: bytes, method: bytes, secret: bytes | None, body: bytes
    ) -> Reply | asyncio.Future[Reply]:
        self.got.append((path, secret, body))
        return self.reply

    def refused(self, status: int, message: str) -> Reply:
        return Reply(status)


class Counting(IngressServer):
    def __init__(self, answerer: Table) -> None:
        super().__init__(answerer)
        self.opened = 0

    def joined(self, conn: Connection) -> None:
        self.opened += 1
        super().joined(conn)


async def test_connections_are_kept_alive_and_answers_read() -> None:
    table = Table()
    server = Counting(table)
    await server.start("127.0.0.1", 0)
    client = WebhookClient(f"http://127.0.0.1:{server.port}/tg/5?x=1")
    try:
        results = await asyncio.gather(
            *(client.post(b'{"update_id":%d}' % i, SECRET_LINE, 5.0) for i in range(4))
        )
        assert results == [(200, None)] * 4
        for i in range(4, 20):  # one after another: the same connection each time
            assert await client.post(b'{"update_id":%d}' % i, SECRET_LINE, 5.0) == (200, None)
        assert server.opened == 4
        assert table.got[0][:2] == (b"/tg/5", b"abc")
        assert sorted(body for _, _, body in table.got) == sorted(
            b'{"update_id":%d}' % i for i in range(20)
        )
        table.reply = Reply(429, b"{}", (("Retry-After", "7"),))
        assert await client.post(b"{}", b"", 5.0) == (429, b"7")
    finally:
        client.close()
        await server.close(2.0)


async def test_a_connection_closed_while_idle_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    table = Table()
    server = Counting(table)
    await server.start("127.0.0.1", 0)
    client = WebhookClient(f"http://127.0.0.1:{server.port}/tg/5")
    try:
        assert await client.post(b"{}", b"", 5.0) == (200, None)
        monkeypatch.setattr(webhook_http, "KEEPALIVE_S", 0.0)
        for conn in list(server.connections):
            conn.expired(conn.loop.time())  # the server's keep-alive timeout, now
        async with asyncio.timeout(5):
            await server.empty.wait()
        assert await client.post(b"{}", b"", 5.0) == (200, None)
        assert server.opened == 2
    finally:
        client.close()
        await server.close(2.0)


async def test_no_answer_raises() -> None:
    table = Table()
    server = IngressServer(table)
    await server.start("127.0.0.1", 0)
    port = server.port
    await server.close(2.0)
    client = WebhookClient(f"http://127.0.0.1:{port}/tg/5")
    with pytest.raises(OSError):
        await client.post(b"{}", b"", 5.0)
    # an answer that never comes: the timeout
    hold: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    table.answer = lambda *a: hold  # type: ignore[method-assign]
    server = IngressServer(table)
    await server.start("127.0.0.1", 0)
    client = WebhookClient(f"http://127.0.0.1:{server.port}/tg/5")
    try:
        with pytest.raises(TimeoutError):
            await client.post(b"{}", b"", 0.2)
        assert client._idle == []  # noqa: SLF001 - not reused after no answer
    finally:
        hold.set_result(Reply(200))
        client.close()
        await server.close(2.0)
