"""How a worker reaches the Bot API server: TLS, proxy, DNS cache, Happy Eyeballs.

Runs in the worker's loop (and in the CLI's). `NetOptions` is built once per distinct
(proxy, TLS) and shared by every bot using it, so a bot pays one reference for it.

Direct connections race the server's addresses as RFC 8305 asks: IPv6 and IPv4
interleaved, the next attempt started `happy_eyeballs_delay_s` after the previous one
(or at once when it fails), each bounded by `connect_timeout_s`; the first socket that
connects wins, the others are closed. A dead IPv6 route therefore costs one delay, not
the whole poll. Through a proxy, the proxy resolves the Bot API host (SOCKS5 with
remote DNS, HTTP CONNECT), and python-socks speaks the proxy's protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final, cast

from python_socks import ProxyError, ProxyTimeoutError, ProxyType
from python_socks.async_.asyncio import Proxy as SocketProxy
from python_socks.async_.asyncio.v2 import Proxy as StreamProxy

from config import Settings
from config.proxy import ProxyUrl

_PROXY_TYPES: Final = {"http": ProxyType.HTTP, "https": ProxyType.HTTP, "socks5": ProxyType.SOCKS5}


#: writers of https:// proxy tunnels, kept while their transport lives
_ANCHORS: Final[weakref.WeakKeyDictionary[object, object]] = weakref.WeakKeyDictionary()


class ProxyFailed(OSError):
    """The proxy refused or broke the tunnel. The message names the proxy, never its password."""


@lru_cache(maxsize=16)
def tls_context(verify: bool = True, ca_file: Path | None = None) -> ssl.SSLContext:
    """One client TLS context per (verify, CA bundle) per process (each costs ~KiBs)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True, slots=True)
class NetOptions:
    """How to open a connection to the Bot API server; shared by many bots."""

    proxy: ProxyUrl | None = None
    tls_verify: bool = True
    tls_ca_file: Path | None = None
    connect_timeout_s: float = 5.0
    happy_eyeballs_delay_s: float = 0.25
    dns_ttl_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings, proxy: ProxyUrl | None) -> NetOptions:
        tg = settings.telegram
        return cls(
            proxy,
            tg.tls_verify,
            tg.tls_ca_file,
            tg.connect_timeout_s,
            tg.happy_eyeballs_delay_s,
            tg.dns_ttl_s,
        )

    def tls(self) -> ssl.SSLContext:
        return tls_context(self.tls_verify, self.tls_ca_file)


class DnsCache:
    """Addresses per (host, port), reused for `ttl` seconds; concurrent callers share one
    lookup. getaddrinfo does not tell a record's TTL, so the TTL is ours (telegram.dns_ttl_s)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], tuple[float, asyncio.Future[list[tuple]]]] = {}

    def clear(self) -> None:
        self._entries.clear()

    async def resolve(self, host: str, port: int, ttl: float) -> list[tuple]:
        """(family, sockaddr) pairs in resolver order, IPv6/IPv4 interleaved per RFC 8305."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        entry = self._entries.get((host, port))
        fut: asyncio.Future[list[tuple]]
        if entry is None or entry[0] < now or (entry[1].done() and entry[1].exception()):
            fut = loop.create_future()
            self._entries[(host, port)] = (now + ttl, fut)
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                fut.set_result(_interleave([(i[0], i[4]) for i in infos]))
            except OSError as exc:
                fut.set_exception(exc)
            except BaseException:
                # this caller was cancelled: the others sharing the lookup get a network
                # error (and retry), never a cancellation that is not theirs
                fut.set_exception(OSError("address lookup abandoned"))
                fut.exception()  # retrieved: no "never retrieved" warning if nobody waits
                raise
            entry = self._entries[(host, port)]
        return await asyncio.shield(entry[1])


#: one cache per process: thousands of bots connect to one host at start
DNS: Final = DnsCache()


def _interleave(addrs: list[tuple]) -> list[tuple]:
    """RFC 8305 §4: alternate address families, starting with the resolver's first."""
    unique: list[tuple] = []
    for addr in addrs:
        if all(addr[1] != u[1] for u in unique):
            unique.append(addr)
    if not unique:
        return []
    first = unique[0][0]
    a = [x for x in unique if x[0] == first]
    b = [x for x in unique if x[0] != first]
    out: list[tuple] = []
    for i in range(max(len(a), len(b))):
        out.extend(x[i] for x in (a, b) if i < len(x))
    return out


async def _connect_one(family: int, sockaddr: tuple, timeout: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


async def happy_connect(host: str, port: int, opts: NetOptions) -> socket.socket:
    """A connected TCP socket to `host`: staggered attempts across its addresses.

    Raises the last attempt's OSError (TimeoutError is one) when none connects.
    """
    addrs = await DNS.resolve(host, port, opts.dns_ttl_s)
    if not addrs:
        raise OSError(f"no address for {host}")
    winner: socket.socket | None = None
    errors: list[BaseException] = []
    failed = asyncio.Event()  # an attempt failed: start the next one now
    done = asyncio.Event()
    tasks: list[asyncio.Task[socket.socket]] = []

    def settle(task: asyncio.Task[socket.socket]) -> None:
        nonlocal winner
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            errors.append(exc)
            failed.set()
            if len(errors) == len(addrs):
                done.set()
        elif winner is None:
            winner = task.result()
            done.set()
        else:
            task.result().close()  # connected second: not needed

    try:
        for family, sockaddr in addrs:
            task = asyncio.create_task(
                _connect_one(family, sockaddr, opts.connect_timeout_s),
                name=f"connect:{sockaddr[0]}",
            )
            task.add_done_callback(settle)
            tasks.append(task)
            failed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(opts.happy_eyeballs_delay_s):
                    await _first(done, failed)
            if done.is_set():
                break
        await done.wait()
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        # a cancelled caller must not leave an attempt running (or a socket open)
        await asyncio.gather(*tasks, return_exceptions=True)
    if winner is None:
        last = errors[-1]
        raise last if isinstance(last, OSError) else OSError(str(last))
    return winner


async def _first(*events: asyncio.Event) -> None:
    """Until any of `events` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def open_transport(
    protocol: asyncio.Protocol, host: str, port: int, use_tls: bool, opts: NetOptions
) -> asyncio.Transport:
    """A transport to the Bot API server (`protocol` attached), direct or through the proxy.

    Raises OSError (ProxyFailed names the proxy) or TimeoutError.
    """
    loop = asyncio.get_running_loop()
    ctx = opts.tls() if use_tls else None
    if opts.proxy is None:
        sock = await happy_connect(host, port, opts)
        try:
            async with asyncio.timeout(opts.connect_timeout_s):
                transport, _ = await loop.create_connection(
                    lambda: protocol, sock=sock, ssl=ctx, server_hostname=host if ctx else None
                )
        except BaseException:
            sock.close()
            raise
        return transport  # type: ignore[return-value]
    p = opts.proxy
    kind = _PROXY_TYPES[p.scheme]
    try:
        if p.scheme != "https":
            # python-socks hands back the tunnelled socket: no stream objects stay behind
            sock = await SocketProxy(
                kind, p.host, p.port, p.username, p.password, rdns=True
            ).connect(host, port, timeout=opts.connect_timeout_s)
        else:
            stream = await StreamProxy(
                kind, p.host, p.port, p.username, p.password, rdns=True, proxy_ssl=opts.tls()
            ).connect(host, port, dest_ssl=ctx, timeout=opts.connect_timeout_s)
    except ProxyTimeoutError:
        raise ProxyFailed(f"proxy {p.shown}: no answer in {opts.connect_timeout_s:g} s") from None
    except ProxyError as exc:
        raise ProxyFailed(f"proxy {p.shown} refused: {_reason(exc)}") from None
    except OSError as exc:
        raise ProxyFailed(f"proxy {p.shown} unreachable: {exc.strerror or exc}") from None
    if p.scheme != "https":
        try:
            async with asyncio.timeout(opts.connect_timeout_s):
                transport, _ = await loop.create_connection(
                    lambda: protocol, sock=sock, ssl=ctx, server_hostname=host if ctx else None
                )
        except BaseException:
            sock.close()
            raise
        return transport  # type: ignore[return-value]
    # TLS to the proxy, then TLS inside it: the tunnel is python-socks' stream; hand its
    # transport to our protocol (as aiohttp-socks does). Its writer must stay referenced:
    # a collected StreamWriter closes its transport.
    writer = stream.writer
    transport = cast(asyncio.Transport, writer.transport)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    _ANCHORS[transport] = writer
    return transport


def _reason(exc: ProxyError) -> str:
    # python-socks' messages hold no credentials (they name a reply code or a status line)
    return str(exc)[:200] or type(exc).__name__
