"""The lean getUpdates connection against a scripted raw HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from bots.telegram.http1 import HttpProtocolError
from bots.telegram.longpoll import LongPoll
from tests.rawhttp import RawServer, ok


async def test_content_length_answers_reuse_one_connection(server: RawServer) -> None:
    poll = LongPoll(f"http://127.0.0.1:{server.port}", "123:SECRET")
    server.answers = [ok(b'{"ok":true,"result":[]}'), ok(b'{"ok":true,"result":[1]}')]
    assert await poll.post(b'{"offset":1}', 5) == (200, b'{"ok":true,"result":[]}')
    assert await poll.post(b'{"offset":2}', 5) == (200, b'{"ok":true,"result":[1]}')
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /bot123:SECRET/getUpdates HTTP/1.1\r\n")
    assert server.requests[1].endswith(b'{"offset":2}')
    poll.close()


async def test_chunked_answers_are_reassembled(server: RawServer) -> None:
    poll = LongPoll(f"http://127.0.0.1:{server.port}", "1:S")
    server.answers = [
        b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"ok"\r\n11;ext=1\r\n:false,"x":12345}\r\n0\r\n\r\n'
    ]
    status, body = await poll.post(b"{}", 5)
    assert (status, body) == (409, b'{"ok":false,"x":12345}')
    poll.close()


async def test_a_keepalive_closed_by_the_server_while_idle_is_retried_once(
    server: RawServer,
) -> None:
    poll = LongPoll(f"http://127.0.0.1:{server.port}", "1:S")
    server.answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n[]",
        None,  # the server drops the kept-alive connection on the next request
        ok(b"[1]"),
    ]
    assert await poll.post(b"{}", 5) == (200, b"[]")
    assert await poll.post(b"{}", 5) == (200, b"[1]")
    assert server.connections == 2


async def test_a_connection_that_breaks_mid_answer_is_an_error(server: RawServer) -> None:
    poll = LongPoll(f"http://127.0.0.1:{server.port}", "1:S")
    server.answers = [b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial<close>']
    with pytest.raises(HttpProtocolError):
        await poll.post(b"{}", 5)


async def test_a_hanging_server_times_out_and_the_connection_is_dropped(
    server: RawServer,
) -> None:
    poll = LongPoll(f"http://127.0.0.1:{server.port}", "1:S")
    server.answers = [b"hang"]
    with pytest.raises(TimeoutError):
        await poll.post(b"{}", 0.2)
    server.answers = [ok(b"[]")]
    assert await poll.post(b"{}", 5) == (200, b"[]")
    assert server.connections == 2


async def test_garbage_is_a_protocol_error_not_a_hang(server: RawServer) -> None:
    poll = LongPoll(f"http://127.0.0.1:{server.port}", "1:S")
    server.answers = [b"SSH-2.0-OpenSSH\r\n\r\n"]
    with pytest.raises(HttpProtocolError, match="status line"):
        await poll.post(b"{}", 5)


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError):
        LongPoll("ftp://example.org", "1:S")
    assert LongPoll("https://api.telegram.org", "1:S")._server.port == 443


async def test_connections_to_one_host_reuse_its_cached_addresses(server: RawServer) -> None:
    from bots.telegram.net import DNS

    DNS.clear()
    polls = [LongPoll(f"http://localhost:{server.port}", f"{i}:S") for i in range(50)]
    server.answers = [ok(b"[]") for _ in polls]
    results = await asyncio.gather(*(p.post(b"{}", 5) for p in polls))
    assert results == [(200, b"[]")] * 50
    assert list(DNS._entries) == [("localhost", server.port)]
    for p in polls:
        p.close()
