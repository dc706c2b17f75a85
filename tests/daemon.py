"""Test harness: run the real daemon (`botvisor run`) as a child process.

Readiness comes from the systemd notify protocol: the harness binds a datagram
socket, names it in NOTIFY_SOCKET and waits for READY=1 — an event, not a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from config import Settings
from tests.leakcheck import LEAKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def wait_for(self, field_: str, timeout: float) -> list[str]:
        """Wait for a datagram containing the line `field_` (e.g. READY=1)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                for i, msg in enumerate(self.messages):
                    if field_ in msg.split("\n"):
                        del self.messages[: i + 1]
                        return msg.split("\n")
                data = await loop.sock_recv(self.sock, 4096)
                self.messages.append(data.decode())

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _sample(line: str) -> tuple[str, frozenset[tuple[str, str]], float] | None:
    m = _SAMPLE.match(line.strip())
    if m is None:
        return None
    labels = frozenset((k, v) for k, v in _LABEL.findall(m.group(2) or "") if k != "host")
    return m.group(1), labels, float(m.group(3))


def has_sample(text: str, line: str) -> bool:
    """The Prometheus exposition `text` has the sample `line` ("name{labels} value"),
    labels in any order, whatever `host` label the daemon adds to every sample."""
    want = _sample(line)
    assert want is not None, f"not a sample: {line!r}"
    return any(_sample(got) == want for got in text.splitlines() if not got.startswith("#"))


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    http: str
    notify: NotifySocket
    log_path: Path
    session: aiohttp.ClientSession = field(repr=False)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.http + path, timeout=aiohttp.ClientTimeout(total=10)) as r:
            body = await r.read()
            if r.content_type == "application/json":
                return r.status, orjson.loads(body)
            return r.status, body.decode()

    async def status(self) -> dict[str, Any]:
        code, data = await self.get("/v1/status")
        assert code == 200, data
        return data

    async def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Status once `predicate` holds; heartbeats refresh it once a second, so poll it."""
        async with asyncio.timeout(timeout):
            while not predicate(data := await self.status()):  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.1)
        return data

    async def wait_metrics(self, line: str, timeout: float = 15) -> str:
        """The /metrics text once it holds the sample `line` (see `has_sample`); workers
        fold counters into it once a heartbeat, from another process, so it is polled."""
        async with asyncio.timeout(timeout):
            while True:
                code, text = await self.get("/metrics")
                assert code == 200, text
                if has_sample(str(text), line):
                    return str(text)
                await asyncio.sleep(0.1)  # noqa: ASYNC110 - another process's files

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (master and workers); other lines are skipped."""
        out = []
        for line in self.log_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def unexpected_warnings(self, expected: Iterable[str]) -> list[str]:
        """WARNING and worse lines whose event is not in `expected` (fnmatch patterns)."""
        patterns = list(expected)
        return [
            f"{r.get('level')} {r.get('event')} {orjson.dumps(r).decode()[:300]}"
            for r in self.log_lines()
            if str(r.get("level", "")).lower() in BAD_LEVELS
            and not any(fnmatch.fnmatchcase(str(r.get("event", "")), p) for p in patterns)
        ]


def _flatten(tree: dict[str, Any], prefix: str = "BOTVISOR_") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "__"))
        elif value is not None:
            out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def daemon_env(settings: Settings, api_base: str, http_port: int, **extra: str) -> dict[str, str]:
    """Every setting as BOTVISOR_* variables, so the child runs exactly `settings`.

    An `extra` value of "" removes that variable (e.g. to let a config file decide)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTVISOR_")}
    env.update(_flatten(settings.to_json_dict()))
    env.update(
        {
            "BOTVISOR_TELEGRAM__API_BASE": api_base,
            "BOTVISOR_HTTP__PORT": str(http_port),
            "BOTVISOR_LOG__FORMAT": "json",
        }
    )
    env.update(extra)
    return {k: v for k, v in env.items() if v != "" or k not in extra}


#: A daemon under test whose log has one of these is a failed test, unless expected.
BAD_LEVELS = frozenset({"warning", "error", "critical", "exception"})


@asynccontextmanager
async def start_daemon(
    settings: Settings,
    api_base: str,
    tmp: Path,
    *,
    ready_timeout: float = 60,
    expect_warnings: Iterable[str] = (),
    **extra_env: str,
) -> AsyncIterator[Daemon]:
    """The daemon, ready. At exit, every WARNING/ERROR line in its log fails the test
    unless its event matches one of `expect_warnings` (warnings are how scale bugs
    first show)."""
    port = free_port()
    notify = NotifySocket(tmp / f"notify-{port}.sock")
    env = daemon_env(settings, api_base, port, NOTIFY_SOCKET=str(notify.path), **extra_env)
    log_path = tmp / f"daemon-{port}.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "supervisor.cli.main",
            "run",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
        )
    finally:
        os.close(fd)
    session = aiohttp.ClientSession()
    daemon = Daemon(proc, f"http://127.0.0.1:{port}", notify, log_path, session)
    try:
        try:
            await notify.wait_for("READY=1", ready_timeout)
        except TimeoutError:
            raise AssertionError(
                f"daemon not ready in {ready_timeout}s:\n{daemon.log_text()[-3000:]}"
            ) from None
        yield daemon
        passed = True
    except BaseException:
        passed = False  # the test's own failure is the one to report
        raise
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await session.close()
        notify.close()
        LEAKS.scan_file(log_path)
    bad = daemon.unexpected_warnings(expect_warnings)
    if passed and bad:
        raise AssertionError(
            f"{len(bad)} unexpected WARNING/ERROR line(s) in the daemon log "
            f"{log_path}:\n" + "\n".join(bad[:20])
        )
