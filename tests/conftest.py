"""Shared fixtures: a throwaway PostgreSQL database, Redis with a key prefix, Settings.

PostgreSQL and Redis are the machine's own at 127.0.0.1:5432 (user postgres, trust) and
127.0.0.1:6379 when they answer within a second, else private embedded servers started in a
temporary directory for the session. `BOTVISOR_TEST_SERVICES=embedded` skips the machine's
servers and always starts the private ones (CI runs the suite both ways). Nothing of the machine's is touched beyond the one
database created and dropped for this run and keys under each test's prefix.

Session fixtures are synchronous (asyncio.run for the few async calls, an embedded server
in its own thread and event loop), so they don't depend on pytest-asyncio's loop scopes;
function-scoped fixtures that talk to servers are async.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from bots.telegram.sessions import SessionPool
from config import Settings, load_settings
from supervisor.embedded.base import EmbeddedServices
from supervisor.embedded.servers import open_embedded
from tests.botapi import open_pools

SYSTEM_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
SYSTEM_REDIS = ("127.0.0.1", 6379)
ANSWER_TIMEOUT_S = 1.0
#: "embedded": never use the machine's servers; anything else: use them when they answer.
SERVICES_MODE = os.environ.get("BOTVISOR_TEST_SERVICES", "auto")


def _use_system() -> bool:
    return SERVICES_MODE != "embedded"


def _postgres_answers(dsn: str) -> bool:
    async def connect() -> None:
        conn = await asyncpg.connect(dsn, timeout=ANSWER_TIMEOUT_S)
        await conn.close(timeout=ANSWER_TIMEOUT_S)

    try:
        asyncio.run(connect())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True


def _redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=ANSWER_TIMEOUT_S) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedInThread:
    """open_embedded held open in a thread with its own event loop, for a sync fixture."""

    def __init__(self, *, redis: bool, postgres: bool) -> None:
        # Search bit for others: as root, `nobody` keeps PostgreSQL inside this directory.
        self.dir = Path(tempfile.mkdtemp(prefix="botvisor-test-"))
        self.dir.chmod(0o711)
        self._kinds = {"redis": redis, "postgres": postgres}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.services: EmbeddedServices | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with open_embedded(self.dir / "state", **self._kinds) as services:
                self.services = services
                self._ready.set()
                await self._stop.wait()  # until stop(), at the end of the session
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()

    def start(self) -> EmbeddedServices:
        self._thread.start()
        if not self._ready.wait(120):
            raise TimeoutError("embedded servers not up after 120 s")
        if self.services is None:
            raise RuntimeError("embedded servers failed to start") from self._error
        return self.services

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server_dsn() -> Iterator[str]:
    """A superuser DSN of a running PostgreSQL: the machine's, or a private one."""
    if _use_system() and _postgres_answers(SYSTEM_POSTGRES):
        yield SYSTEM_POSTGRES
        return
    embedded = EmbeddedInThread(redis=False, postgres=True)
    try:
        services = embedded.start()
        assert services.database_url is not None
        yield services.database_url
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """URL of a running Redis: the machine's, or a private one."""
    if _use_system() and _redis_answers(*SYSTEM_REDIS):
        yield "redis://{}:{}/0".format(*SYSTEM_REDIS)
        return
    embedded = EmbeddedInThread(redis=True, postgres=False)
    try:
        services = embedded.start()
        assert services.redis_url is not None
        yield services.redis_url
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def database_url(postgres_server_dsn: str) -> Iterator[str]:
    """A database of its own for this test run, dropped at the end."""
    name = f"botvisor_test_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_server_dsn, timeout=10)
        try:
            await conn.execute(sql, timeout=60)
        finally:
            await conn.close(timeout=10)

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urlsplit(postgres_server_dsn)._replace(path=f"/{name}").geturl()
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url(redis_server_url: str) -> str:
    return redis_server_url


@pytest.fixture
async def key_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"botvisor-test-{secrets.token_hex(6)}:"
    yield prefix
    client = aioredis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def settings_factory(
    database_url: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> Callable[..., Settings]:
    """make(overrides=None, /, **sections) -> Settings wired to the test servers.

    Overrides merge deeply: make({"workers": {"count": 2}}) or make(workers={"count": 2}).
    No environment, and an empty config file so a ./botvisor.toml is never read.
    """
    config_file = tmp_path / "botvisor-test.toml"
    config_file.write_text("")
    base = {
        "redis": {"url": redis_url, "prefix": key_prefix},
        "database": {"url": database_url},
        "state": {"dir": str(tmp_path / "state")},
    }

    def make(overrides: Mapping[str, Any] | None = None, /, **sections: Any) -> Settings:
        settings = load_settings(
            config_file,
            environ={},
            overrides=deep_merge(deep_merge(base, overrides or {}), sections),
        )
        os.makedirs(settings.state.dir, exist_ok=True)
        return settings

    return make


@pytest.fixture
async def fresh_settings(
    postgres_server_dsn: str, settings_factory: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Settings]]:
    """Like settings_factory, but on a database of this test's own (daemon tests load
    every active bot in the database, so they must not see each other's)."""
    name = f"botvisor_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(postgres_server_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"', timeout=60)
    finally:
        await conn.close(timeout=10)
    url = urlsplit(postgres_server_dsn)._replace(path=f"/{name}").geturl()

    def make(overrides: Mapping[str, Any] | None = None, /, **sections: Any) -> Settings:
        return settings_factory(deep_merge({"database": {"url": url}}, overrides or {}), **sections)

    yield make
    conn = await asyncpg.connect(postgres_server_dsn, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=60)
    finally:
        await conn.close(timeout=10)


#: tests/<kind>/… -> marker: `make test TEST_ARGS="-m unit"` runs the fast subset.
KINDS = ("unit", "integration", "e2e")


#: Daemon tests that run a fleet under load and time its recovery. `make test` runs the
#: suite on two pytest-xdist workers (`--dist loadgroup`); these all go to one of them,
#: one at a time, so two fleets under load never share the machine's cores while the
#: other worker runs everything else.
UNDER_LOAD = frozenset(
    {
        "test_faults.py",
        "test_context_faults.py",
        "test_daemon_e2e.py",
        "test_supervision.py",
        "test_inbox_daemon.py",
        "test_multihost.py",
        "test_upgrade.py",
        "test_broadcasts_daemon.py",
        "test_webhook_daemon.py",
        "test_webhook_faults.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        for kind in KINDS:
            if kind in path.parts:
                item.add_marker(getattr(pytest.mark, kind))
        if path.name in UNDER_LOAD:
            item.add_marker(pytest.mark.xdist_group("under_load"))


@pytest.fixture(scope="session", autouse=True)
def _secret_grep_tap() -> Iterator[None]:
    """Every finished log line of this process passes the leak check before it is written."""
    from config import log_output as ours
    from tests.leakcheck import LEAKS

    emit = ours._emit

    def tapped(line: str) -> None:
        LEAKS.scan(line, "test process")
        emit(line)

    ours._emit = tapped
    yield
    ours._emit = emit


@pytest.fixture(autouse=True)
def no_secret_in_logs(_secret_grep_tap: None) -> Iterator[None]:
    """Each test runs with our logging chain on every logger (ours, aiohttp, asyncpg, redis,
    openai) and fails if any line it produced, here or in a daemon it ran, held a secret."""
    from config.logging import configure_logging, reset_logging
    from tests.leakcheck import LEAKS

    configure_logging("INFO", "json")
    # The in-process emulator's and test servers' access lines (one per request, thousands
    # in a fleet test) would slow the loop that plays Telegram; the daemon logs none.
    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.WARNING)
    LEAKS.take()
    yield
    leaks = LEAKS.take()
    access.setLevel(logging.NOTSET)
    reset_logging()
    assert not leaks, "secrets in log lines:\n" + "\n".join(leaks)


@pytest.fixture
async def session() -> AsyncIterator[SessionPool]:
    """A worker's Bot API pools (tests/botapi.py: `worker_api` builds a BotApi on them
    that makes its calls the way a worker's bots do)."""
    async with open_pools() as pools:
        yield pools
