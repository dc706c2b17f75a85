"""The worker's shared pools for every Bot API call but the long poll.

Two kinds, one per distinct way out (direct, or one proxy), created on first use and
shared by every bot that goes that way: a per-bot proxy override costs a pool per proxy,
not per bot. `sender()`: the lean send pools (bots/telegram/send_pool.py) the worker's
bots make every JSON call through; one per Bot API server too (a bot may point at a local
one). aiohttp sessions: multipart calls, and one-off clients (the CLI, the master).
Runs in the worker's loop (and the master's and the CLI's, with one pool each).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import aiohttp
import structlog
from aiohttp_socks import ProxyConnector, ProxyType

from bots.telegram.net import NetOptions
from bots.telegram.send_pool import SendPool
from config import Settings
from config.bot_settings import telegram_for

log = structlog.get_logger(__name__)

_PROXY_TYPES: Final = {"http": ProxyType.HTTP, "https": ProxyType.HTTP, "socks5": ProxyType.SOCKS5}


def make_connector(net: NetOptions, limit: int, keepalive_s: float) -> aiohttp.TCPConnector:
    """A bounded keep-alive connector that goes out the way `net` says."""
    common: dict = {
        # bounded: a burst of 5,000 replies must reuse connections, not open 5,000
        "limit": limit,
        "limit_per_host": 0,
        "keepalive_timeout": keepalive_s,
        "ssl": net.tls(),
    }
    p = net.proxy
    if p is None:
        return aiohttp.TCPConnector(
            ttl_dns_cache=int(net.dns_ttl_s) or None,
            happy_eyeballs_delay=net.happy_eyeballs_delay_s or None,
            **common,
        )
    return ProxyConnector(
        host=p.host,
        port=p.port,
        proxy_type=_PROXY_TYPES[p.scheme],
        username=p.username,
        password=p.password,
        rdns=True,
        proxy_ssl=net.tls() if p.scheme == "https" else None,
        **common,
    )


class SessionPool:
    """aiohttp sessions by way out. `default` follows the config; `for_net` any other."""

    def __init__(self, settings: Settings) -> None:
        tg = settings.telegram
        self._limit = tg.connections_per_worker
        self._keepalive_s = max(30.0, tg.poll_timeout_s + 5.0)
        self.default_net = NetOptions.from_settings(settings, telegram_for(settings, {}).proxy)
        self._sessions: dict[NetOptions, aiohttp.ClientSession] = {}
        self._senders: dict[tuple[str, NetOptions], SendPool] = {}
        self.default = self.for_net(self.default_net)

    def for_net(self, net: NetOptions) -> aiohttp.ClientSession:
        session = self._sessions.get(net)
        if session is None:
            session = aiohttp.ClientSession(
                connector=make_connector(net, self._limit, self._keepalive_s)
            )
            self._sessions[net] = session
            if net.proxy is not None:
                log.info("telegram.proxy", proxy=net.proxy.shown)
        return session

    def sender(self, api_base: str, net: NetOptions) -> SendPool:
        """The send pool to `api_base` going out the way `net` says (created on first use)."""
        key = (api_base.rstrip("/"), net)
        pool = self._senders.get(key)
        if pool is None:
            pool = SendPool(api_base, net, self._limit, self._keepalive_s)
            self._senders[key] = pool
        return pool

    async def close(self) -> None:
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            sender.close()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


@asynccontextmanager
async def open_session_pool(settings: Settings) -> AsyncIterator[SessionPool]:
    """Must be entered in a running loop (aiohttp binds its connector to it)."""
    pool = SessionPool(settings)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def open_bot_api_session(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    """One session for one-off Bot API calls (the CLI's, the admin API's getMe checks)."""
    async with open_session_pool(settings) as pool:
        yield pool.default
