"""A proxy URL, checked once: `http://`, `https://` or `socks5://`, optional user:password.

Used by the config (`telegram.proxy`) and by a bot's own settings (`telegram.proxy`), so
one set of rules and messages applies to both. `shown` is the URL with its password
masked: the only spelling that may reach a log line or an error. Imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote, urlsplit

PROXY_SCHEMES: Final = ("http", "https", "socks5")


@dataclass(frozen=True, slots=True)
class ProxyUrl:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def shown(self) -> str:
        """The URL without its password (safe for logs and errors)."""
        user = f"{self.username}:***@" if self.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}"

    def __repr__(self) -> str:
        return f"ProxyUrl({self.shown})"


def parse_proxy(url: str) -> ProxyUrl:
    """The parsed proxy, or ValueError saying what is wrong (never echoing a password)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("not a URL like socks5://user:password@host:1080") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ValueError(
            f"scheme {scheme or '(none)'!r} is not one of http://, https://, socks5:// "
            "(e.g. socks5://user:password@proxy.example:1080)"
        )
    if not parts.hostname:
        raise ValueError("no proxy host (e.g. socks5://user:password@proxy.example:1080)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a proxy URL has only scheme, credentials, host and port")
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
        if port is None:
            raise ValueError("a socks5:// proxy needs a port (e.g. socks5://host:1080)")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise ValueError("a proxy password needs a user name (user:password@host)")
    if scheme == "socks5" and (
        len((username or "").encode()) > 255 or len((password or "").encode()) > 255
    ):
        raise ValueError("SOCKS5 user names and passwords are at most 255 bytes")
    return ProxyUrl(scheme, parts.hostname, port, username, password)
