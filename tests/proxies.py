"""A real proxy server (pproxy, a dev dependency) on 127.0.0.1 for tests and benches.

`open_proxy("socks5", user="u", password="p")` serves SOCKS5 (or HTTP CONNECT with
"http") in this loop on a free port and yields its URL. pproxy is a complete proxy
server, not a mock: it speaks RFC 1928/1929 and HTTP CONNECT with Basic auth.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pproxy


@dataclass(slots=True)
class RunningProxy:
    scheme: str
    port: int
    user: str | None
    password: str | None
    #: pproxy's own lines: one "socks5 127.0.0.1:PORT -> HOST:PORT" per tunnel opened
    lines: list[str] = field(default_factory=list)

    @property
    def tunnels(self) -> int:
        return sum(" -> " in line for line in self.lines)

    def url(self, password: str | None = None) -> str:
        pw = self.password if password is None else password
        cred = f"{self.user}:{pw}@" if self.user is not None else ""
        host = "localhost" if self.scheme == "https" else "127.0.0.1"  # the name in its cert
        return f"{self.scheme}://{cred}{host}:{self.port}"


@asynccontextmanager
async def open_proxy(
    scheme: str,
    *,
    user: str | None = None,
    password: str | None = None,
    cert: tuple[Path, Path] | None = None,
) -> AsyncIterator[RunningProxy]:
    """`scheme` "https" is an HTTP proxy behind TLS with `cert` (certificate, key)."""
    auth = f"#{user}:{password}" if user is not None else ""
    wire = "http+ssl" if scheme == "https" else scheme
    server = pproxy.Server(f"{wire}://127.0.0.1:0{auth}")
    if cert is not None:
        server.sslserver.load_cert_chain(*cert)
    lines: list[str] = []
    # authtime -1: check the credentials on every connection (pproxy's default trusts an
    # address that authenticated once for 30 days, which would hide a wrong password)
    args = {"rserver": [], "verbose": lambda s: lines.append(str(s)), "authtime": -1}
    srv: asyncio.Server = await server.start_server(args)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield RunningProxy(scheme, port, user, password, lines)
    finally:
        srv.close()
        await srv.wait_closed()
