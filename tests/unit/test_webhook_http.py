"""The webhook ingress's HTTP/1.1 server (bots/telegram/webhook_http.py) over real
sockets: pipelining in order, limits, malformed input, slow peers, shutdown. The answerer
is a table of replies (the ingress itself: tests/integration/test_webhook_ingress.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bots.telegram import webhook_http, webhook_server
from bots.telegram.webhook_reply import Reply
from bots.telegram.webhook_server import IngressServer

SECRET = b"s3cret-token"


class Answers:
    """Answers 200 to a POST with the secret; `hold` makes answers futures the test
    resolves."""

    max_body = 1024

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes, bytes | None, bytes]] = []
        self.held: list[asyncio.Future[Reply]] = []
        self.hold = False
        self.refusals: list[int] = []
        self.changed = asyncio.Event()

    async def wait_seen(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.seen) < count:
                self.changed.clear()
                await self.changed.wait()

    def answer(
        self, path: bytes, method: bytes, secret: bytes | None, body: bytes
    ) -> Reply | asyncio.Future[Reply]:
        self.seen.append((path, method, secret, body))
        self.changed.set()
        reply = Reply(200 if secret == SECRET else 401, b'{"n":%d}' % len(self.seen))
        if not self.hold:
            return reply
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.held.append(fut)
        return fut

    def refused(self, status: int, message: str) -> Reply:
        self.refusals.append(status)
        return Reply(status, b'{"error":"%s"}' % message.encode())


@contextlib.asynccontextmanager
async def serving(answers: Answers) -> AsyncIterator[IngressServer]:
    server = IngressServer(answers)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close(2.0)


def post(n: int, *, secret: bytes = SECRET, extra: bytes = b"") -> bytes:
    body = b'{"update_id":%d}' % n
    return (
        b"POST /tg/%d HTTP/1.1\r\nHost: x\r\nX-Telegram-Bot-Api-Secret-Token: %s\r\n"
        b"%sContent-Length: %d\r\n\r\n%s" % (n, secret, extra, len(body), body)
    )


async def responses(reader: asyncio.StreamReader, count: int) -> list[tuple[int, bytes, bytes]]:
    """`count` responses: (status, head, body)."""
    out = []
    async with asyncio.timeout(5):
        for _ in range(count):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            out.append((int(head.split(b" ")[1]), head, await reader.readexactly(length)))
    return out


async def closed(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(5):
        return await reader.read() == b""


async def test_keep_alive_and_pipelined_answers_in_request_order() -> None:
    answers = Answers()
    async with serving(answers) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post(1) + post(2, secret=b"wrong") + post(3))
        await answers.wait_seen(3)
        assert [s[0] for s in answers.seen] == [b"/tg/1", b"/tg/2", b"/tg/3"]
        assert answers.seen[0][1:] == (b"POST", SECRET, b'{"update_id":1}')
        # a request split anywhere, byte by byte, still parses
        for byte in post(4):
            writer.write(bytes([byte]))
            await writer.drain()
        got = await responses(reader, 4)
        assert [(s, b) for s, _, b in got] == [
            (200, b'{"n":1}'),
            (401, b'{"n":2}'),
            (200, b'{"n":3}'),
            (200, b'{"n":4}'),
        ]
        assert all(b"connection: close" not in h.lower() for _, h, _ in got)
        writer.close()


async def test_answers_resolved_out_of_order_still_go_out_in_order() -> None:
    answers = Answers()
    answers.hold = True
    async with serving(answers) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post(1) + post(2) + post(3))
        await answers.wait_seen(3)
        answers.held[2].set_result(Reply(200, b"3"))
        answers.held[1].set_result(Reply(503, b"2", (("Retry-After", "7"),)))
        await asyncio.sleep(0.05)
        assert reader.at_eof() is False and len(reader._buffer) == 0  # noqa: SLF001 - nothing yet
        answers.held[0].set_result(Reply(200, b"1"))
        got = await responses(reader, 3)
        assert [(s, b) for s, _, b in got] == [(200, b"1"), (503, b"2"), (200, b"3")]
        assert b"Retry-After: 7\r\n" in got[1][1]
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST /tg/1 HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", 400),
        (b"POST /tg/1 HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST /tg/1 HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),  # body never sent
        (
            b"POST /tg/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"400\r\n"
            + b"x" * 1024
            + b"\r\n"
            + b"10\r\n"
            + b"y" * 16
            + b"\r\n0\r\n\r\n",
            413,
        ),
    ],
)
async def test_bad_requests_are_refused_and_the_connection_closed(
    request_bytes: bytes, status: int
) -> None:
    answers = Answers()
    async with serving(answers) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post(1) + request_bytes + post(2))  # nothing after it is read
        got = await responses(reader, 2)
        assert [s for s, _, _ in got] == [200, status]
        assert b"Connection: close" in got[1][1]
        assert await closed(reader)
        assert answers.refusals == [status] and len(answers.seen) == 1
        writer.close()
        # the server goes on
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post(3))
        assert [s for s, _, _ in await responses(reader, 1)] == [200]
        writer.close()


async def test_a_head_that_never_ends_is_cut_off() -> None:
    answers = Answers()
    async with serving(answers) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /tg/1 HTTP/1.1\r\nX-Pad: ")
        for _ in range(10):
            writer.write(b"a" * 8000)  # one header value, never finished
            await writer.drain()
        got = await responses(reader, 1)
        assert got[0][0] == 431
        assert await closed(reader)


async def test_http_1_0_closes_and_expect_continue_is_answered() -> None:
    answers = Answers()
    async with serving(answers) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post(1).replace(b"HTTP/1.1", b"HTTP/1.0"))
        got = await responses(reader, 1)
        assert got[0][0] == 200 and b"Connection: close" in got[0][1]
        assert await closed(reader)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head, body = post(2, extra=b"Expect: 100-continue\r\n").split(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n")
        async with asyncio.timeout(5):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        assert [s for s, _, _ in await responses(reader, 1)] == [200]
        writer.close()


async def test_slow_and_idle_peers_are_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_server, "SWEEP_S", 0.05)
    monkeypatch.setattr(webhook_http, "REQUEST_S", 0.2)
    monkeypatch.setattr(webhook_http, "KEEPALIVE_S", 0.4)
    answers = Answers()
    async with serving(answers) as server:
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", server.port)
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", server.port)
        idle_w.write(post(1))
        assert [s for s, _, _ in await responses(idle_r, 1)] == [200]
        slow_w.write(post(2)[:30])  # and nothing more
        got = await responses(slow_r, 1)
        assert got[0][0] == 408 and await closed(slow_r)
        assert await closed(idle_r)  # idle past KEEPALIVE_S after its answer
        slow_w.close()
        idle_w.close()
        async with asyncio.timeout(5):
            await server.empty.wait()  # the lingering one ends once its peer closed


async def test_a_peer_that_reads_nothing_pauses_reading_then_is_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhook_server, "SWEEP_S", 0.05)
    monkeypatch.setattr(webhook_http, "WRITE_S", 0.3)
    answers = Answers()
    big = Reply(200, b"x" * 1_000_000)
    answers.answer = lambda *a: big  # type: ignore[method-assign]
    async with serving(answers) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
            __import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096
        )
        writer.write(post(1) * 20)
        assert not server.empty.is_set()
        async with asyncio.timeout(5):
            await server.empty.wait()  # the server aborts it once WRITE_S passed
        writer.close()


async def test_close_answers_what_was_read_then_closes() -> None:
    answers = Answers()
    server = IngressServer(answers)
    await server.start("127.0.0.1", 0)
    port = server.port
    busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
    idle_w.write(post(0))
    assert [s for s, _, _ in await responses(idle_r, 1)] == [200]  # now idle, kept alive
    answers.hold = True
    busy_w.write(post(1))
    await answers.wait_seen(2)
    closing = asyncio.create_task(server.close(5.0))
    assert await closed(idle_r)
    assert not closing.done()  # it waits for the answer owed
    answers.held[0].set_result(Reply(200, b"ok"))
    got = await responses(busy_r, 1)
    assert got[0][0] == 200 and b"Connection: close" in got[0][1]
    assert await closed(busy_r)
    async with asyncio.timeout(5):
        await closing
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    busy_w.close()
    idle_w.close()


class _Transport:
    """Enough of a transport for a Connection fed by hand."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from(
                [
                    post(1),
                    post(2)[:40],
                    b"\r\n",
                    b"Content-Length: 99999999999999999999\r\n",
                    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
                    b"POST /tg/1 HTTP/1.1\r\n",
                    b"X-Telegram-Bot-Api-Secret-Token: \xff\x00\r\n",
                ]
            ),
        ),
        max_size=12,
    )
)
def test_nothing_a_peer_sends_escapes_and_every_answer_is_http(chunks: list[bytes]) -> None:
    async def feed() -> None:
        answers = Answers()
        server = IngressServer(answers)
        conn = webhook_http.Connection(server)
        transport = _Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            conn.data_received(chunk)
        conn.connection_lost(None)
        written = bytes(transport.out)
        assert not written or written.startswith(b"HTTP/1.1 ")
        assert written.count(b"HTTP/1.1 ") >= len(answers.seen)  # each request answered

    asyncio.run(feed())
