"""How a worker reaches the Bot API server: TLS, proxy, DNS cache, Happy Eyeballs.

Runs in the worker's loop (and in the CLI's). `NetOptions` is built once per distinct
(proxy, TLS) and shared by every bot using it, so a bot pays one reference for it.

Direct connections race the server's addresses as RFC 8305 asks: IPv6 and IPv4
interleaved, the first address given `happy_eyeballs_delay_s`, then the others started
one delay apart (or at once when one fails) with the first retried last, each attempt
bounded by `connect_timeout_s`; the first connection wins, the others are closed. A dead
IPv6 route therefore costs one delay, not the whole poll. Through a proxy, the proxy resolves the Bot API host (SOCKS5 with
remote DNS, HTTP CONNECT), and python-socks speaks the proxy's protocol.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final, TypeVar, cast

from python_socks import ProxyError, ProxyTimeoutError, ProxyType
from python_socks.async_.asyncio import Proxy as SocketProxy
from python_socks.async_.asyncio.v2 import Proxy as StreamProxy

from config import Settings
from config.proxy import ProxyUrl

T = TypeVar("T")

_PROXY_TYPES: Final = {"http": ProxyType.HTTP, "https": ProxyType.HTTP, "socks5": ProxyType.SOCKS5}


class TunnelProtocol(asyncio.Protocol):
    """A protocol that holds what keeps its tunnel open: through an https:// proxy,
    python-socks' StreamWriter (a collected StreamWriter closes its transport; uvloop's
    transports take no weak references, so the protocol keeps it)."""

    __slots__ = ("anchor",)

    anchor: object


P = TypeVar("P", bound=TunnelProtocol)


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


async def happy_connect(
    host: str, port: int, opts: NetOptions, attempt: Callable[[str, int], Awaitable[T]]
) -> T:
    """The first of `attempt(ip, port)` to succeed over `host`'s addresses, staggered.

    The next attempt starts `happy_eyeballs_delay_s` after the previous one, or at once
    when an attempt fails; each is bounded by `connect_timeout_s`. The losers are
    cancelled (a loser that connected anyway is closed). Raises the last OSError
    (TimeoutError is one) when none succeeds. Lean on purpose: thousands of bots connect
    at once, and asyncio.wait/timeout objects per attempt showed as KiBs per bot of RSS.
    """
    addrs = await DNS.resolve(host, port, opts.dns_ttl_s)
    if not addrs:
        raise OSError(f"no address for {host}")
    loop = asyncio.get_running_loop()
    # fast path, taken by nearly every connect: the first address answers within the
    # delay, awaited inline (no task). Else it is dropped and retried last, after the
    # others, which race as below: a dead first route costs one delay.
    staggered = len(addrs) > 1 and opts.happy_eyeballs_delay_s < opts.connect_timeout_s
    first = addrs[0][1]
    try:
        async with asyncio.timeout(
            opts.happy_eyeballs_delay_s if staggered else opts.connect_timeout_s
        ):
            return await attempt(first[0], first[1])
    except OSError:  # refused, unreachable, or the time limit (TimeoutError)
        if len(addrs) == 1:
            raise
        addrs = [*addrs[1:], addrs[0]] if staggered else addrs[1:]
    running: list[asyncio.Task[T]] = []
    error: BaseException | None = None
    try:
        for i, (_family, sockaddr) in enumerate(addrs):
            running.append(_start(loop, attempt(sockaddr[0], sockaddr[1]), opts))
            stagger = None if i == len(addrs) - 1 else opts.happy_eyeballs_delay_s
            while running:
                await _first_done(loop, running, stagger)
                for task in [t for t in running if t.done()]:
                    running.remove(task)
                    if task.cancelled():  # only our timer cancels an attempt
                        error = TimeoutError(f"connect timed out ({opts.connect_timeout_s:g} s)")
                    elif task.exception() is not None:
                        error = task.exception()
                    else:
                        return task.result()
                if stagger is not None:
                    break  # the delay passed or an attempt failed: start the next one
        raise error if isinstance(error, OSError) else OSError(str(error))
    finally:
        for task in running:
            task.cancel()
        if running:
            for result in await asyncio.gather(*running, return_exceptions=True):
                if isinstance(result, tuple):  # connected after the winner: not needed
                    result[0].close()


def _start(
    loop: asyncio.AbstractEventLoop, attempt: Awaitable[T], opts: NetOptions
) -> asyncio.Task[T]:
    """One connect attempt as a task that our timer cancels after `connect_timeout_s`."""
    task: asyncio.Task[T] = loop.create_task(attempt)  # type: ignore[arg-type]
    timer = loop.call_later(opts.connect_timeout_s, task.cancel)
    task.add_done_callback(lambda _t: timer.cancel())
    return task


async def _first_done(
    loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[T]], timeout: float | None
) -> None:
    """Until one of `tasks` is done or `timeout` seconds passed."""
    wake: asyncio.Future[None] = loop.create_future()

    def poke(_: object = None) -> None:
        if not wake.done():
            wake.set_result(None)

    for task in tasks:
        task.add_done_callback(poke)
    timer = loop.call_later(timeout, poke) if timeout is not None else None
    try:
        await wake
    finally:
        if timer is not None:
            timer.cancel()
        for task in tasks:
            task.remove_done_callback(poke)


async def open_transport(
    factory: Callable[[], P], host: str, port: int, use_tls: bool, opts: NetOptions
) -> tuple[asyncio.Transport, P]:
    """A transport to the Bot API server and its protocol, direct or through the proxy.

    Raises OSError (ProxyFailed names the proxy) or TimeoutError.
    """
    loop = asyncio.get_running_loop()
    ctx = opts.tls() if use_tls else None
    if opts.proxy is None:

        def attempt(ip: str, to: int) -> Awaitable[tuple[asyncio.BaseTransport, P]]:
            return loop.create_connection(
                factory, ip, to, ssl=ctx, server_hostname=host if ctx else None
            )

        transport, protocol = await happy_connect(host, port, opts, attempt)
        return cast(asyncio.Transport, transport), cast(P, protocol)
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
        hint = " (check its user name and password)" if p.username and _closed(exc) else ""
        raise ProxyFailed(f"proxy {p.shown} refused: {_reason(exc)}{hint}") from None
    except OSError as exc:
        raise ProxyFailed(f"proxy {p.shown} unreachable: {exc.strerror or exc}") from None
    if p.scheme != "https":
        try:
            async with asyncio.timeout(opts.connect_timeout_s):
                transport, protocol = await loop.create_connection(
                    factory, sock=sock, ssl=ctx, server_hostname=host if ctx else None
                )
        except BaseException:
            sock.close()
            raise
        return cast(asyncio.Transport, transport), cast(P, protocol)
    # TLS to the proxy, then TLS inside it: the tunnel is python-socks' stream; hand its
    # transport to our protocol (as aiohttp-socks does). Its writer must stay referenced:
    # a collected StreamWriter closes its transport.
    writer = stream.writer
    transport = cast(asyncio.Transport, writer.transport)
    protocol = factory()
    protocol.anchor = writer
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return transport, protocol


def _closed(exc: ProxyError) -> bool:
    """A SOCKS5 server that dislikes the credentials may just hang up (pproxy does)."""
    return "closed" in str(exc).lower()


def _reason(exc: ProxyError) -> str:
    # python-socks' messages hold no credentials (they name a reply code or a status line)
    return str(exc)[:200] or type(exc).__name__
