"""The worker's send pool (bots/telegram/send_pool.py) against raw HTTP servers on 127.0.0.1:
keep-alive reuse, the bound on connections, timeouts, a request never sent twice, and
BotApi's calls through it against the Bot API emulator."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from bots.telegram.errors import NOT_SENT, BotNetworkError, RetryAfter
from bots.telegram.http1 import HttpProtocolError
from bots.telegram.longpoll import DIRECT
from bots.telegram.send_pool import ConnectFailed, SendPool
from bots.telegram.sessions import SessionPool
from emulators.telegram.server import RunningEmulator, open_emulator
from tests.botapi import worker_api
from tests.rawhttp import RawServer, ok

HEAD = b"POST /bot123:SECRET/"


def pool_for(port: int, *, limit: int = 8, keepalive_s: float = 30.0) -> SendPool:
    return SendPool(f"http://127.0.0.1:{port}", DIRECT, limit, keepalive_s)


async def test_calls_reuse_one_keepalive_connection_and_carry_the_method_and_body(
    server: RawServer,
) -> None:
    pool = pool_for(server.port)
    server.answers = [ok(b'{"ok":true,"result":1}'), ok(b'{"ok":true,"result":2}')]
    head = pool.head("123:SECRET")
    assert head == HEAD
    assert await pool.post(head, "sendMessage", b'{"a":1}', 5) == (200, b'{"ok":true,"result":1}')
    assert await pool.post(head, "getMe", b"{}", 5) == (200, b'{"ok":true,"result":2}')
    assert server.connections == 1 and pool.connections == 1
    assert server.requests[0].startswith(b"POST /bot123:SECRET/sendMessage HTTP/1.1\r\n")
    assert b"Content-Length: 7\r\n" in server.requests[0]
    assert server.requests[0].endswith(b'{"a":1}')
    assert server.requests[1].startswith(b"POST /bot123:SECRET/getMe HTTP/1.1\r\n")
    pool.close()
    assert pool.connections == 0


async def test_a_path_prefix_of_the_api_base_is_kept() -> None:
    pool = SendPool("http://127.0.0.1:9/tg/", DIRECT, 1, 30)
    assert pool.head("1:S") == b"POST /tg/bot1:S/"


class HoldingServer:
    """Answers nothing until `release` is set; counts connections open at once."""

    def __init__(self) -> None:
        self.open_now = 0
        self.most_open = 0
        self.requests = 0
        self.port = 0
        self.release = asyncio.Event()
        self._arrived = asyncio.Event()

    async def until(self, requests: int) -> None:
        """Returns once `requests` requests have arrived."""
        while self.requests < requests:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), 5)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                self._arrived.set()
                await self.release.wait()
                writer.write(ok(b'{"ok":true,"result":true}'))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


@pytest.fixture
async def holding() -> AsyncIterator[HoldingServer]:
    held = HoldingServer()
    srv = await asyncio.start_server(held.handle, "127.0.0.1", 0)
    held.port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield held
        held.release.set()
        srv.close()


async def test_a_burst_waits_for_the_bounded_connections_instead_of_opening_more(
    holding: HoldingServer,
) -> None:
    pool = pool_for(holding.port, limit=3)
    calls = [asyncio.create_task(pool.post(HEAD, "sendMessage", b"{}", 5)) for _ in range(20)]
    await holding.until(3)  # the three connections' first requests
    assert pool.connections == 3 and not any(c.done() for c in calls)
    holding.release.set()
    answers = await asyncio.gather(*calls)
    assert answers == [(200, b'{"ok":true,"result":true}')] * 20
    assert holding.most_open == 3 and holding.requests == 20
    pool.close()


async def test_an_answer_that_does_not_come_times_out_and_frees_the_connection(
    server: RawServer,
) -> None:
    pool = pool_for(server.port, limit=1)
    server.answers = [b"hang"]
    with pytest.raises(TimeoutError):
        await pool.post(HEAD, "sendMessage", b"{}", 0.2)
    assert pool.connections == 0
    server.answers = [ok(b"[]")]
    assert await pool.post(HEAD, "sendMessage", b"{}", 5) == (200, b"[]")
    assert server.connections == 2
    pool.close()


async def test_a_connection_that_breaks_after_the_request_left_is_not_sent_again(
    server: RawServer,
) -> None:
    pool = pool_for(server.port)
    server.answers = [None]  # the server reads the request, then hangs up
    with pytest.raises(HttpProtocolError):
        await pool.post(HEAD, "sendMessage", b'{"text":"once"}', 5)
    assert len(server.requests) == 1
    assert pool.connections == 0
    pool.close()


async def test_a_connection_the_server_closes_after_its_answer_is_not_reused(
    server: RawServer,
) -> None:
    pool = pool_for(server.port)
    server.answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]<close>",
        ok(b"[1]"),
    ]
    assert await pool.post(HEAD, "getMe", b"{}", 5) == (200, b"[]")
    assert pool.connections == 0
    assert await pool.post(HEAD, "getMe", b"{}", 5) == (200, b"[1]")
    assert server.connections == 2
    pool.close()


async def test_connections_idle_past_the_keepalive_are_closed_not_reused(
    server: RawServer,
) -> None:
    pool = pool_for(server.port, keepalive_s=0.0)
    server.answers = [ok(b"[]"), ok(b"[]"), ok(b"[]")]
    for _ in range(3):
        assert await pool.post(HEAD, "getMe", b"{}", 5) == (200, b"[]")
    assert server.connections == 3 and pool.connections == 0
    pool.close()


async def test_a_cancelled_waiter_gives_its_turn_to_the_next(holding: HoldingServer) -> None:
    pool = pool_for(holding.port, limit=1)
    first = asyncio.create_task(pool.post(HEAD, "a", b"{}", 5))
    await holding.until(1)
    waiting = asyncio.create_task(pool.post(HEAD, "b", b"{}", 5))
    third = asyncio.create_task(pool.post(HEAD, "c", b"{}", 5))
    await asyncio.wait({waiting, third}, timeout=0)  # one loop turn: both start and queue
    assert pool.waiting == 2
    waiting.cancel()
    holding.release.set()
    assert (await first)[0] == 200 and (await third)[0] == 200
    assert waiting.cancelled() and holding.requests == 2
    assert pool.connections == 1 and pool.waiting == 0
    pool.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_connection_is_named_as_not_sent() -> None:
    pool = pool_for(_free_port())
    with pytest.raises(ConnectFailed):
        await pool.post(HEAD, "sendMessage", b"{}", 2)
    assert pool.connections == 0


async def test_bot_api_names_a_refused_connection_as_not_sent(session: SessionPool) -> None:
    api = worker_api(session, f"http://127.0.0.1:{_free_port()}", "123:SECRETabcdefghijklmnopqrst")
    with pytest.raises(BotNetworkError) as err:
        await api.call("sendMessage", {"chat_id": 1, "text": "x"})
    assert err.value.cause in NOT_SENT
    assert "SECRET" not in str(err.value)


async def test_a_closed_pool_refuses_new_calls(server: RawServer) -> None:
    pool = pool_for(server.port)
    server.answers = [ok(b"[]")]
    await pool.post(HEAD, "getMe", b"{}", 5)
    pool.close()
    assert pool.connections == 0
    with pytest.raises(ConnectFailed, match="closed"):
        await pool.post(HEAD, "getMe", b"{}", 5)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(rate_limits=True) as emu:
        yield emu


async def test_bot_api_calls_through_the_pool_map_answers_and_errors(
    emulator: RunningEmulator, session: SessionPool
) -> None:
    bot = emulator.state.create_bots(1)[0]
    api = worker_api(session, emulator.base_url, bot.token, retries=0)
    me = await api.call("getMe")
    assert me["id"] == bot.id
    # two sends to one chat within a second: the emulator's flood limit answers 429
    await api.call("sendMessage", {"chat_id": 7, "text": "one"})
    with pytest.raises(RetryAfter):
        await api.call("sendMessage", {"chat_id": 7, "text": "two"})
    assert [m["text"] for m in emulator.state.sent_log(bot.id) or []] == ["one"]
    assert session.sender(emulator.base_url, DIRECT).connections == 1
