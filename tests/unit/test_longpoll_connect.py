"""The long-poll client connecting and reading as a library would be tested: Happy Eyeballs
and per-address timeouts against a dead first address, the DNS cache, TLS with a private
CA, half-closed sockets and slow headers. Servers are real sockets on 127.0.0.1/::1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from bots.telegram.http1 import HttpProtocolError
from bots.telegram.longpoll import LongPoll
from bots.telegram.net import DNS, NetOptions, happy_connect
from tests.tlscerts import CertAuthority, make_ca

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{"ok":true,"result":[]}'


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


async def serve_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def start(handler: Handler, **kw: object) -> tuple[asyncio.Server, int]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0, **kw)  # type: ignore[arg-type]
    return srv, srv.sockets[0].getsockname()[1]


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A 127.0.0.1 port whose SYNs are dropped: a listener with a full backlog that never
    accepts, as a dead route looks to connect() (it hangs instead of being refused)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the accept queue; further connects hang
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    yield port
    for s in fillers:
        s.close()
    listener.close()


@pytest.fixture
def resolve_to(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[list[tuple[str, int]]], None]]:
    """Make the name "api.test" resolve to the given (ip, port) list, in that order."""
    DNS.clear()

    def pin(addrs: list[tuple[str, int]]) -> None:
        loop = asyncio.get_running_loop()

        async def getaddrinfo(host: str, port: int, **_kw: object) -> list[tuple]:
            assert host == "api.test"
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (ip, p),
                )
                for ip, p in addrs
            ]

        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)

    yield pin
    DNS.clear()


async def test_a_dead_first_address_costs_one_happy_eyeballs_delay_not_the_poll(
    blackhole: int, resolve_to: Callable[[list[tuple[str, int]]], None]
) -> None:
    srv, port = await start(serve_ok)
    async with srv:
        # the dead address first; connect_timeout longer than the whole poll
        resolve_to([("127.0.0.1", blackhole), ("127.0.0.1", port)])
        opts = NetOptions(connect_timeout_s=60, happy_eyeballs_delay_s=0.05)
        poll = LongPoll("http://api.test:80", "1:S", opts)
        assert await poll.post(b"{}", 5) == (200, b'{"ok":true,"result":[]}')
        poll.close()


async def test_without_staggering_a_per_address_timeout_moves_to_the_next_address(
    blackhole: int, resolve_to: Callable[[list[tuple[str, int]]], None]
) -> None:
    srv, port = await start(serve_ok)
    async with srv:
        resolve_to([("127.0.0.1", blackhole), ("127.0.0.1", port)])
        # the second attempt may only start once the first has failed (its timeout)
        opts = NetOptions(connect_timeout_s=0.2, happy_eyeballs_delay_s=60)
        poll = LongPoll("http://api.test:80", "1:S", opts)
        assert await poll.post(b"{}", 5) == (200, b'{"ok":true,"result":[]}')
        poll.close()


async def test_a_refused_address_starts_the_next_attempt_at_once(
    resolve_to: Callable[[list[tuple[str, int]]], None],
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()  # nothing listens: connect is refused
    srv, port = await start(serve_ok)
    async with srv:
        resolve_to([("::1", refused_port), ("127.0.0.1", refused_port), ("127.0.0.1", port)])
        opts = NetOptions(connect_timeout_s=60, happy_eyeballs_delay_s=60)
        loop = asyncio.get_running_loop()
        tried: list[str] = []

        def attempt(ip: str, to: int) -> Awaitable[tuple[asyncio.BaseTransport, asyncio.Protocol]]:
            tried.append(ip)
            return loop.create_connection(asyncio.Protocol, ip, to)

        transport, _ = await asyncio.wait_for(happy_connect("api.test", 80, opts, attempt), 5)
        assert transport.get_extra_info("peername")[1] == port
        assert tried == ["::1", "127.0.0.1", "127.0.0.1"]
        transport.close()


async def test_when_every_address_fails_the_last_error_is_raised(
    blackhole: int, resolve_to: Callable[[list[tuple[str, int]]], None]
) -> None:
    resolve_to([("127.0.0.1", blackhole), ("127.0.0.1", blackhole)])
    opts = NetOptions(connect_timeout_s=0.1, happy_eyeballs_delay_s=0.01)
    poll = LongPoll("http://api.test:80", "1:S", opts)
    with pytest.raises(TimeoutError):
        await poll.post(b"{}", 5)


async def test_addresses_interleave_ipv6_and_ipv4() -> None:
    from bots.telegram.net import _interleave

    six, four = socket.AF_INET6, socket.AF_INET
    addrs = [(six, ("::1", 1)), (six, ("::2", 1)), (four, ("1.0.0.1", 1)), (six, ("::1", 1))]
    assert _interleave(addrs) == [(six, ("::1", 1)), (four, ("1.0.0.1", 1)), (six, ("::2", 1))]


async def test_the_dns_cache_expires_after_its_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    DNS.clear()
    loop = asyncio.get_running_loop()
    lookups = 0
    real = loop.getaddrinfo

    async def counting(*args: object, **kw: object) -> list[tuple]:
        nonlocal lookups
        lookups += 1
        return await real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    await DNS.resolve("localhost", 1, ttl=3600)
    await DNS.resolve("localhost", 1, ttl=3600)
    assert lookups == 1
    await DNS.resolve("localhost", 2, ttl=0)
    await DNS.resolve("localhost", 2, ttl=0)  # expired at once: looked up again
    assert lookups == 3
    DNS.clear()


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


async def test_tls_is_verified_against_the_configured_ca(ca: CertAuthority) -> None:
    srv, port = await start(serve_ok, ssl=ca.server_context())
    async with srv:
        trusted = LongPoll(f"https://localhost:{port}", "1:S", NetOptions(tls_ca_file=ca.ca_file))
        assert await trusted.post(b"{}", 5) == (200, b'{"ok":true,"result":[]}')
        trusted.close()
        # verify is on by default: the system's CAs do not know ours
        default = LongPoll(f"https://localhost:{port}", "1:S")
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            await default.post(b"{}", 5)
        off = LongPoll(f"https://localhost:{port}", "1:S", NetOptions(tls_verify=False))
        assert (await off.post(b"{}", 5))[0] == 200
        off.close()


async def test_a_certificate_for_another_name_is_refused(ca: CertAuthority) -> None:
    srv, port = await start(serve_ok, ssl=ca.server_context())
    async with srv:
        DNS.clear()
        # 127.0.0.2 is loopback too, but not a name in the certificate
        poll = LongPoll(f"https://127.0.0.2:{port}", "1:S", NetOptions(tls_ca_file=ca.ca_file))
        with pytest.raises(OSError):
            await poll.post(b"{}", 5)


# -- reading ----------------------------------------------------------------------------------


async def test_an_answer_followed_by_a_half_close_is_read_then_a_new_connection_is_used() -> None:
    connections = 0

    async def answer_then_half_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(r)
        w.write(OK)
        w.write_eof()  # FIN: no more from us, but we still read
        await w.drain()
        await r.read()  # until the client closes its side
        w.close()

    srv, port = await start(answer_then_half_close)
    async with srv:
        poll = LongPoll(f"http://127.0.0.1:{port}", "1:S")
        assert await poll.post(b"{}", 5) == (200, b'{"ok":true,"result":[]}')
        assert await poll.post(b"{}", 5) == (200, b'{"ok":true,"result":[]}')
        assert connections == 2
        poll.close()


async def test_a_half_close_in_the_middle_of_the_head_is_a_protocol_error() -> None:
    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Len")
        w.write_eof()
        await w.drain()
        await r.read()
        w.close()

    srv, port = await start(cut)
    async with srv:
        poll = LongPoll(f"http://127.0.0.1:{port}", "1:S")
        with pytest.raises(HttpProtocolError):
            await poll.post(b"{}", 5)


async def test_headers_trickling_in_byte_by_byte_are_assembled() -> None:
    async def slow(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        for i in range(len(OK)):
            w.write(OK[i : i + 1])
            await w.drain()
            await asyncio.sleep(0)  # one byte per loop turn: many data_received calls
        await r.read()
        w.close()

    srv, port = await start(slow)
    async with srv:
        poll = LongPoll(f"http://127.0.0.1:{port}", "1:S")
        assert await poll.post(b"{}", 5) == (200, b'{"ok":true,"result":[]}')
        poll.close()


async def test_headers_slower_than_the_poll_timeout_time_out_and_drop_the_connection() -> None:
    stalled = asyncio.Event()
    peer_closed = asyncio.Event()

    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\n")
        await w.drain()
        stalled.set()
        await r.read()  # returns when the client drops the connection
        peer_closed.set()
        w.close()

    srv, port = await start(stall)
    async with srv:
        poll = LongPoll(f"http://127.0.0.1:{port}", "1:S")
        with pytest.raises(TimeoutError):
            await poll.post(b"{}", 0.3)
        assert stalled.is_set()
        await asyncio.wait_for(peer_closed.wait(), 5)


async def test_a_chunked_answer_split_across_reads_is_reassembled() -> None:
    body = b'{"ok":true,"result":[' + b",".join(b"%d" % i for i in range(2000)) + b"]}"
    chunks = [body[i : i + 777] for i in range(0, len(body), 777)]
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        + b"0\r\nX-Trailer: 1\r\n\r\n"
    )

    async def split(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(r)
                for i in range(0, len(wire), 100):  # boundaries fall inside sizes and CRLFs
                    w.write(wire[i : i + 100])
                    await w.drain()
                    await asyncio.sleep(0)
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    srv, port = await start(split)
    async with srv:
        poll = LongPoll(f"http://127.0.0.1:{port}", "1:S")
        assert await poll.post(b"{}", 5) == (200, body)
        assert await poll.post(b"{}", 5) == (200, body)  # same connection, clean state
        poll.close()


def test_the_tls_context_is_shared_per_setting(tmp_path: Path) -> None:
    a, b = NetOptions(), NetOptions()
    assert a.tls() is b.tls()
    assert NetOptions(tls_verify=False).tls() is not a.tls()
