"""supervisor.embedded.base: private Redis and PostgreSQL started on demand from a state directory.

As root these run PostgreSQL as `nobody` (inside the state directory when nobody can reach
it, else under /var/tmp). Every test cleans up what it made outside its temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis

from supervisor.embedded.base import EmbeddedServices, digest, read_pid
from supervisor.embedded.postgres_server import EmbeddedPostgres
from supervisor.embedded.servers import open_embedded

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


def _temporary_reachable_dir() -> Iterator[Path]:
    """A temporary directory others may search, so `nobody` can reach a state dir in it.

    Afterwards also removes what open_embedded made outside it for state dirs in it: short
    socket directories in /tmp, PostgreSQL clusters in /var/tmp.
    """
    base = Path(tempfile.mkdtemp(prefix="botvisor-embedded-")).resolve()
    base.chmod(0o711)
    yield base
    for state_dir in base.rglob("state"):
        key = digest(state_dir)
        for outside in (
            *Path("/tmp").glob(f"botvisor-{key}-*"),
            Path(f"/var/tmp/botvisor-pg-{key}"),
        ):
            shutil.rmtree(outside, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


reachable_dir = pytest.fixture(_temporary_reachable_dir)


@pytest.fixture
def state_dir(reachable_dir: Path) -> Path:
    """A state directory of this test's own: its servers start from nothing (initdb)."""
    return reachable_dir / "state"


@pytest.fixture(scope="module")
def shared_state_dir() -> Iterator[Path]:
    """A state directory the tests below share, one at a time, to run initdb only once:
    each test's servers are stopped when it ends, and its data stays."""
    for base in _temporary_reachable_dir():
        yield base / "state"


def _pids(state_dir: Path) -> dict[str, int]:
    pids = {
        "redis": read_pid(state_dir / "redis" / "redis.pid"),
        "postgres": read_pid(EmbeddedPostgres(state_dir).pidfile),
    }
    return {name: pid for name, pid in pids.items() if pid is not None}


async def _ping(services: EmbeddedServices) -> None:
    assert services.redis_url is not None
    client = aioredis.from_url(services.redis_url, socket_timeout=5)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def _write(services: EmbeddedServices) -> None:
    assert services.redis_url is not None and services.database_url is not None
    conn = await asyncpg.connect(services.database_url, timeout=10)
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS kept; CREATE TABLE kept (v text); INSERT INTO kept VALUES ('pg')"
        )
    finally:
        await conn.close()
    client = aioredis.from_url(services.redis_url, socket_timeout=5)
    try:
        await client.set("kept", "redis")
    finally:
        await client.aclose()


async def _read(services: EmbeddedServices) -> tuple[str, bytes | str | None]:
    assert services.redis_url is not None and services.database_url is not None
    conn = await asyncpg.connect(services.database_url, timeout=10)
    try:
        value = await conn.fetchval("SELECT v FROM kept")
    finally:
        await conn.close()
    client = aioredis.from_url(services.redis_url, socket_timeout=5)
    try:
        return value, await client.get("kept")
    finally:
        await client.aclose()


def _stopped(state_dir: Path, pids: dict[str, int]) -> None:
    assert not (state_dir / "redis" / "redis.sock").exists()
    assert not EmbeddedPostgres(state_dir).pidfile.exists()
    assert not any(psutil.pid_exists(pid) for pid in pids.values()), pids


async def test_starts_serves_reuses_and_stops(shared_state_dir: Path) -> None:
    state_dir = shared_state_dir
    async with open_embedded(state_dir) as services:
        assert services.started == ("redis", "postgres")
        assert services.redis_url == f"unix://{state_dir}/redis/redis.sock"
        assert services.database_url == (
            f"postgresql://botvisor@/botvisor?host={state_dir}/postgres/run"
        )
        await _ping(services)
        await _write(services)
        pids = _pids(state_dir)
        assert set(pids) == {"redis", "postgres"}
        for pid in pids.values():
            assert psutil.Process(pid).net_connections(kind="inet") == []  # no TCP port
        if IS_ROOT:
            assert psutil.Process(pids["postgres"]).username() == "nobody"
            st = os.stat(state_dir / "postgres")
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (
                EmbeddedPostgres(state_dir).account.uid,
                0o700,
            )

        async with open_embedded(state_dir) as again:
            assert again == replace(services, started=())
            assert await _read(again) == ("pg", b"redis")
        await _ping(services)  # the call that reused them left them running
        assert _pids(state_dir) == pids
    _stopped(state_dir, pids)


async def test_data_survives_stop_and_start(shared_state_dir: Path) -> None:
    state_dir = shared_state_dir
    async with open_embedded(state_dir) as services:
        await _write(services)
        pids = _pids(state_dir)
    _stopped(state_dir, pids)
    async with open_embedded(state_dir) as services:
        assert services.started == ("redis", "postgres")
        assert await _read(services) == ("pg", b"redis")


async def test_concurrent_opens_start_each_server_once(state_dir: Path) -> None:
    both_open = asyncio.Barrier(2)

    async def use() -> tuple[str, ...]:
        async with open_embedded(state_dir) as services:
            await asyncio.wait_for(both_open.wait(), 20)
            await _ping(services)
            return services.started

    results = await asyncio.gather(use(), use())
    assert sorted(name for started in results for name in started) == ["postgres", "redis"]
    assert not (state_dir / "redis" / "redis.sock").exists()


CHILD = """
import asyncio, json, sys
from pathlib import Path
import structlog
from supervisor.embedded.servers import open_embedded

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

async def main() -> None:
    async with open_embedded(Path(sys.argv[1])) as services:
        print(json.dumps(services.started), flush=True)
        await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), 25)

asyncio.run(main())
"""


@pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")
async def test_last_process_out_stops_servers_another_started(shared_state_dir: Path) -> None:
    state_dir = shared_state_dir
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with open_embedded(state_dir) as services:
        assert services.started == ("redis", "postgres")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(state_dir),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        try:
            line = await asyncio.wait_for(child.stdout.readline(), 20)
            assert json.loads(line) == []  # the other process reused both
        except BaseException:
            child.kill()
            await asyncio.wait_for(child.wait(), 10)
            raise
    await _ping(services)  # we started them, but the other process still uses them
    child.stdin.write(b"done\n")
    assert await asyncio.wait_for(child.wait(), 20) == 0
    assert not (state_dir / "redis" / "redis.sock").exists()
    assert not EmbeddedPostgres(state_dir).pidfile.exists()


async def test_long_state_dir_uses_short_socket_dirs(reachable_dir: Path) -> None:
    state_dir = reachable_dir / ("x" * 100) / "state"
    async with open_embedded(state_dir) as services:
        assert services.redis_url is not None and services.database_url is not None
        assert services.redis_url.startswith("unix:///tmp/botvisor-")
        assert "?host=/tmp/botvisor-" in services.database_url
        await _ping(services)
        conn = await asyncpg.connect(services.database_url, timeout=10)
        assert await conn.fetchval("SELECT current_database()") == "botvisor"
        await conn.close()


@pytest.mark.skipif(not IS_ROOT, reason="root only: nobody cannot reach a 0700 directory")
async def test_root_keeps_postgres_where_nobody_can_reach_it(reachable_dir: Path) -> None:
    private = reachable_dir / "private"
    private.mkdir(mode=0o700)
    state_dir = private / "state"
    state_dir.mkdir()
    pg = EmbeddedPostgres(state_dir)
    assert pg.root.parent == Path("/var/tmp")
    async with open_embedded(state_dir, redis=False) as services:
        assert services.started == ("postgres",) and services.redis_url is None
        assert services.database_url is not None
        conn = await asyncpg.connect(services.database_url, timeout=10)
        assert await conn.fetchval("SELECT current_user") == "botvisor"
        await conn.close()
        st = os.lstat(pg.root)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (pg.account.uid, 0o700)
        assert not (state_dir / "postgres").exists()
