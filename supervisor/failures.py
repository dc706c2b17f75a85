"""Failures an operator can fix: one line (what is wrong, which setting, what to do).

Code that knows the context raises `OperatorError`; `explain()` turns the common
low-level exceptions (asyncpg, OSError, Redis) into one. The CLI prints
`botvisor: <what> (<key>: <where it came from>); <what to do>` and exits with the
error's status — no traceback unless `--debug`.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import asyncpg
import redis.exceptions

from config import ENV_PREFIX, Settings
from supervisor.exitcodes import ExitCode

#: what a background chore meets when PostgreSQL or Redis is away: logged and retried
STORE_FAULTS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    redis.exceptions.RedisError,
    OSError,
    TimeoutError,
)


class OperatorError(Exception):
    """Something the operator can fix; `key` is the setting involved, if any."""

    def __init__(self, what: str, todo: str, exit_status: int, key: str | None = None) -> None:
        super().__init__(what)
        self.what, self.todo, self.exit_status, self.key = what, todo, exit_status, key

    def line(self, config_path: Path | None = None) -> str:
        where = f" ({self.key}: {origin(self.key, config_path)})" if self.key else ""
        return f"{self.what}{where}; {self.todo}"


def origin(key: str, config_path: Path | None) -> str:
    """Where a setting's value came from: the environment, the config file or the default."""
    env = ENV_PREFIX + key.upper().replace(".", "__")
    if env in os.environ:
        return f"from environment {env}"
    if config_path is not None:
        return f"from {config_path} or the default"
    return "the default (no config file)"


def postgres_address(settings: Settings) -> str:
    """host:port/database of the configured PostgreSQL, without credentials."""
    if settings.database.url is None:
        return f"the private PostgreSQL in {Path(settings.state.dir).absolute()}"
    url = urlsplit(settings.database.url.get_secret_value())
    host = dict(parse_qsl(url.query)).get("host") or url.hostname or "localhost"
    return f"{host}:{url.port or 5432}{url.path or '/'}"


def redis_address(settings: Settings) -> str:
    if settings.redis.url is None:
        return f"the private Redis in {Path(settings.state.dir).absolute()}"
    url = urlsplit(settings.redis.url)
    return url.path if url.scheme == "unix" else f"{url.hostname}:{url.port or 6379}"


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def explain(exc: BaseException, settings: Settings) -> OperatorError | None:
    """An OperatorError for a failure an operator can fix, else None (a bug: traceback)."""
    for leaf in _leaves(exc):
        if isinstance(leaf, OperatorError):
            return leaf
        found = _explain_one(leaf, settings)
        if found is not None:
            return found
    return None


def _explain_one(exc: BaseException, settings: Settings) -> OperatorError | None:
    pg = f"PostgreSQL at {postgres_address(settings)}"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return OperatorError(
            f"{pg} rejected the password",
            "fix the password in database.url",
            ExitCode.CONFIG,
            "database.url",
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return OperatorError(
            f"{pg} rejected the connection: {exc}",
            "create the role (e.g. `createuser --createdb NAME` as postgres) "
            "or put an existing role in database.url",
            ExitCode.CONFIG,
            "database.url",
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return OperatorError(
            f"{pg}: {exc}",
            "create it (`createdb -O ROLE NAME` as postgres) or fix database.url",
            ExitCode.CONFIG,
            "database.url",
        )
    if isinstance(exc, asyncpg.UndefinedTableError):
        return OperatorError(
            f"{pg} holds no botvisor registry ({exc})",
            "check database.url, or create the tables with `botvisor migrate`",
            ExitCode.NO_REGISTRY,
            "database.url",
        )
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return OperatorError(
            f"{pg} is starting up or shutting down", "retry in a moment", ExitCode.UNAVAILABLE
        )
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return OperatorError(
            f"Redis at {redis_address(settings)} is unreachable: {exc}",
            "start Redis or fix redis.url",
            ExitCode.UNAVAILABLE,
            "redis.url",
        )
    if isinstance(exc, aiohttp.ClientConnectionError):
        return OperatorError(
            f"the Bot API at {settings.telegram.api_base} is unreachable: {exc}",
            "check this host's network and DNS, or fix telegram.api_base",
            ExitCode.UNAVAILABLE,
            "telegram.api_base",
        )
    if isinstance(exc, socket.gaierror):
        return OperatorError(
            f"{pg}: unknown host ({exc.strerror})",
            "fix the host name in database.url",
            ExitCode.UNAVAILABLE,
            "database.url",
        )
    if isinstance(exc, ConnectionRefusedError | TimeoutError) or (
        isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.ENOENT)
    ):
        reason = "timed out" if isinstance(exc, TimeoutError) else "connection refused"
        return OperatorError(
            f"{pg} is unreachable: {reason}",
            "start PostgreSQL, or fix database.url (unset: a private one is started)",
            ExitCode.UNAVAILABLE,
            "database.url",
        )
    return None
