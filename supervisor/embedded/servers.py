"""Start, share and stop the private servers: `open_embedded`.

Lifetime. Every open_embedded holds a shared flock on `state_dir/<name>.users` while it is
open; starting and stopping happen under an exclusive flock on `state_dir/<name>.lock`, so
two botvisor processes never both initdb or start. At exit the *last* user stops the server
(Redis: SIGTERM; PostgreSQL: SIGINT, its fast shutdown; SIGKILL past a deadline). So a
server started by `bots import` is not pulled from under a `run` that reused it, and one
orphaned by a crash is stopped by the next user to leave. `started` names what this call
started; a call that reused a server stops it only if it is the last user.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path

import structlog

from supervisor.embedded.base import (
    LOCK_TIMEOUT_S,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    EmbeddedError,
    EmbeddedServices,
    Server,
    read_pid,
    state_dir_mode,
    tail,
    until,
)
from supervisor.embedded.postgres_server import EmbeddedPostgres
from supervisor.embedded.redis_server import EmbeddedRedis

log = structlog.get_logger(__name__)


@asynccontextmanager
async def open_embedded(
    state_dir: Path, *, redis: bool = True, postgres: bool = True
) -> AsyncIterator[EmbeddedServices]:
    """Start (or reuse) the private servers of `state_dir`; stop them at exit if last."""

    def prepare() -> tuple[Path, dict[str, Server]]:
        where = Path(state_dir).resolve()  # one path per directory: hashes and locks agree
        where.mkdir(mode=state_dir_mode(), parents=True, exist_ok=True)
        servers: dict[str, Server] = {}
        if redis:
            servers["redis"] = EmbeddedRedis(where)
        if postgres:
            servers["postgres"] = EmbeddedPostgres(where)
        return where, servers

    where, servers = await asyncio.to_thread(prepare)
    async with AsyncExitStack() as stack:
        started = [
            name
            for name, server in servers.items()
            if await stack.enter_async_context(_use(server, where))
        ]
        yield EmbeddedServices(
            redis_url=servers["redis"].url if redis else None,
            database_url=servers["postgres"].url if postgres else None,
            started=tuple(started),
        )


@asynccontextmanager
async def _use(server: Server, state_dir: Path) -> AsyncIterator[bool]:
    lock = state_dir / f"{server.name}.lock"
    users = os.open(
        state_dir / f"{server.name}.users", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        async with _flock(lock):
            # Cannot block: an exclusive holder of .users also holds .lock.
            fcntl.flock(users, fcntl.LOCK_SH | fcntl.LOCK_NB)
            proc = await _start_or_reuse(server)
        try:
            yield proc is not None
        finally:
            async with _flock(lock):
                if _last_user(users):
                    await _stop(server, proc)
                elif proc is not None:
                    log.info(f"embedded {server.name} left running for other botvisor processes")
    finally:
        os.close(users)


def _last_user(users: int) -> bool:
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@asynccontextmanager
async def _flock(path: Path) -> AsyncIterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"{path}: still locked by another process") from None
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)


async def _start_or_reuse(server: Server) -> subprocess.Popen[bytes] | None:
    """Under the lock: reuse a server that answers, else start one and wait until ready."""
    deadline = time.monotonic() + START_TIMEOUT_S
    delay = 0.02
    proc: subprocess.Popen[bytes] | None = None
    try:
        while (state := await server.probe()) != "ready":
            if proc is not None and proc.poll() is not None:
                raise EmbeddedError(
                    f"embedded {server.name} exited with status {proc.returncode}; "
                    f"its log {server.log_path} ends:\n{tail(server.log_path)}"
                )
            if state == "down" and proc is None:
                proc = await server.launch()  # may run initdb first, with its own deadline
                deadline = time.monotonic() + START_TIMEOUT_S
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"embedded {server.name} not ready after {START_TIMEOUT_S:.0f} s; "
                    f"see {server.log_path}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        if proc is not None:
            await server.setup()
    except BaseException:
        if proc is not None:
            await _stop(server, proc)
        raise
    event = "started" if proc is not None else "reused"
    pid = proc.pid if proc is not None else read_pid(server.pidfile)
    log.info(f"embedded {server.name} {event}", pid=pid, url=server.url, **server.describe())
    return proc


async def _stop(server: Server, proc: subprocess.Popen[bytes] | None) -> None:
    """Stop `proc`, or the server of the pidfile when another process started it."""
    if proc is not None:
        if proc.poll() is not None:
            return  # exited and reaped: its pid may be someone else's by now
        pid: int | None = proc.pid
    elif await server.probe() == "down":
        return  # nothing answers: never signal a pid from a stale pidfile
    else:
        pid = read_pid(server.pidfile)
    if pid is None:
        return

    def gone() -> bool:
        return proc.poll() is not None if proc is not None else not server.pidfile.exists()

    with suppress(ProcessLookupError):
        os.kill(pid, server.stop_signal)
    if not await until(gone, STOP_TIMEOUT_S):
        log.warning(f"embedded {server.name} did not stop in time; killing it", pid=pid)
        with suppress(ProcessLookupError):
            if proc is not None:  # our child leads its own process group: take its children too
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        await until(lambda: proc is None or proc.poll() is not None, 5.0)
    log.info(f"embedded {server.name} stopped", pid=pid)
