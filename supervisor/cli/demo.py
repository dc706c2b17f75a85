"""`botvisor demo`: embedded services, the emulator, the daemon and simulated users.

Everything runs as real processes on 127.0.0.1: the emulator and the master (with
its workers) are children of this process, which plays the users and watches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson
import structlog

from bots.telegram.token import BotToken
from config import Settings
from supervisor.cli import demo_report as report
from supervisor.services import open_registry, open_services

log = structlog.get_logger(__name__)


def log_fd(path: Path) -> int:
    """A file descriptor for a child's output; the caller closes it once the child runs."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_http(url: str, timeout: float, want: int = 200) -> bool:
    """Readiness polling of a child server we just started: bounded, short intervals."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == want:
                        return True
            await asyncio.sleep(0.1)
    return False


class Demo:
    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        self.settings = settings
        self.args = args
        self.n_bots = max(1, args.bots)
        self.rate = args.rate if args.rate > 0 else min(2.0 * self.n_bots, 1000.0)
        self.view: TextIO = sys.stdout if not args.json else sys.stderr
        self.tty = self.view.isatty()
        self.state_dir = Path(settings.state.dir).absolute() / "demo"
        self.injected = 0
        self.last_status: dict[str, Any] = {}
        self._prev_totals: dict[int, dict[str, int]] = {}  # per worker, for per-second rates
        self._lines = 0  # lines of the live view to redraw on a TTY
        #: Ctrl-C once: stop the traffic, then stop the daemon and print what was measured
        self.interrupted = False
        self._task: asyncio.Task[Any] | None = None
        self._started = time.monotonic()

    def _interrupt(self) -> None:
        if self.interrupted and self._task is not None:
            self._task.cancel()  # a second Ctrl-C: quit at once
            return
        self.interrupted = True
        print(
            "\ndemo: interrupted; stopping the daemon and summing up what was measured "
            "(Ctrl-C again quits at once)",
            file=sys.stderr,
            flush=True,
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        try:
            return await self._run()
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def _run(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        demo_settings = self.settings.model_copy(
            update={"state": self.settings.state.model_copy(update={"dir": self.state_dir})}
        )
        async with open_services(demo_settings) as live:
            emu_port, http_port = free_port(), free_port()
            fd = log_fd(self.state_dir / "emulator.log")
            try:
                emulator = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "emulators.telegram",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(emu_port),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=fd,
                    start_new_session=True,  # the terminal's Ctrl-C is for us: we stop it
                )
            finally:
                os.close(fd)
            master: asyncio.subprocess.Process | None = None
            try:
                base = f"http://127.0.0.1:{emu_port}"
                if not await _wait_http(f"{base}/control/stats?bots=0", 30):
                    raise RuntimeError("the emulator did not start; see emulator.log")
                # by name: the runtime's import graph never reaches the test doubles
                control = importlib.import_module("emulators.telegram.control")
                async with control.EmulatorControl(base) as emu:
                    bots = await emu.create_bots(self.n_bots)
                    await self._register(live, [b.token for b in bots])
                    master = await self._start_master(live, base, http_port)
                    status_url = f"http://127.0.0.1:{http_port}"
                    self._say(
                        f"demo: {self.n_bots} bots, {self.args.workers} workers, "
                        f"{self.rate:g} msg/s for {self.args.duration:g} s; "
                        f"state in {self.state_dir}"
                    )
                    started = time.monotonic()
                    if not self.interrupted and not await _wait_http(f"{status_url}/readyz", 120):
                        self._say("demo: the daemon did not become ready within 120 s")
                    ready_s = time.monotonic() - started
                    await self._traffic(emu, bots, status_url)
                    await self._settle(emu, 5.0 if self.interrupted else 30.0)
                    stats = await emu.stats(per_bot=False)
                    await self._refresh_status(status_url)
                    code = await self._stop_master(master)
                    master = None
                    summary = self._summary(stats, ready_s, code)
            finally:
                if master is not None and master.returncode is None:
                    master.send_signal(signal.SIGTERM)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(master.wait(), 30)
                if emulator.returncode is None:
                    emulator.terminate()
                    await emulator.wait()
        self._print_summary(summary)
        if self.interrupted:
            return 130
        return 0 if summary["verdict"].startswith("OK") else 1

    async def _register(self, live: Settings, tokens: list[str]) -> None:
        async with open_registry(live) as registry:
            for record in await registry.list():  # the demo's own database: start clean
                await registry.remove(record.id)
            await registry.add_many([(BotToken(t), f"demo_{i}_bot") for i, t in enumerate(tokens)])

    async def _start_master(
        self, live: Settings, api_base: str, http_port: int
    ) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env.update(
            {
                "BOTVISOR_REDIS__URL": live.redis.url or "",
                "BOTVISOR_DATABASE__URL": live.database.url.get_secret_value()
                if live.database.url
                else "",
                "BOTVISOR_REDIS__PREFIX": f"botvisor-demo-{os.getpid()}:",
                "BOTVISOR_TELEGRAM__API_BASE": api_base,
                "BOTVISOR_HTTP__PORT": str(http_port),
                "BOTVISOR_HTTP__HOST": "127.0.0.1",
                "BOTVISOR_WORKERS__COUNT": str(self.args.workers),
                "BOTVISOR_STATE__DIR": str(self.state_dir),
                "BOTVISOR_LOG__FORMAT": "json",
            }
        )
        fd = log_fd(self.state_dir / "daemon.log")
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "supervisor.cli.main",
                "run",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=fd,
                start_new_session=True,  # Ctrl-C reaches only the demo, which drains the daemon
            )
        finally:
            os.close(fd)

    async def _traffic(self, emu: Any, bots: list[Any], status_url: str) -> None:
        """Users write at `rate` msg/s across many chats (each chat well under 1 msg/s)."""
        chats_per_bot = max(1, int(self.rate / self.n_bots * 4) + 1)
        pairs = [(b.id, 10_000 + c) for b in bots for c in range(chats_per_bot)]
        random.shuffle(pairs)
        cycle = itertools.cycle(pairs)
        tick = 0.05
        start = time.monotonic()
        next_view = start + 1.0
        owed = 0.0
        while (now := time.monotonic()) - start < self.args.duration and not self.interrupted:
            owed += self.rate * tick
            batch = int(owed)
            owed -= batch
            if batch:
                msgs = [
                    {"bot_id": b, "chat_id": c, "text": f"hello {self.injected + i}"}
                    for i, (b, c) in enumerate(itertools.islice(cycle, batch))
                ]
                await emu.inject(msgs)
                self.injected += batch
            if now >= next_view:
                next_view += 1.0
                await self._refresh_status(status_url)
                self._show(await emu.stats(per_bot=False), now - start)
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - now)))

    async def _settle(self, emu: Any, timeout: float = 30.0) -> None:
        """Wait (bounded) until every injected message has its reply."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            totals = (await emu.stats(per_bot=False))["totals"]
            if totals["replied"] >= totals["injected"]:
                return
            await asyncio.sleep(0.2)

    async def _refresh_status(self, status_url: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"{status_url}/v1/status", timeout=aiohttp.ClientTimeout(total=3)) as r,
            ):
                self.last_status = await r.json(loads=orjson.loads)

    async def _stop_master(self, master: asyncio.subprocess.Process) -> int:
        master.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(master.wait(), self.settings.shutdown.grace_s + 30)
        except TimeoutError:
            master.kill()
            return await master.wait()

    # -- output -----------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        print(text, file=self.view, flush=True)

    def _show(self, stats: dict[str, Any], elapsed: float) -> None:
        prev = self._prev_totals
        lines = [
            f"t={elapsed:5.1f}s  injected {stats['totals']['injected']}  "
            f"replied {stats['totals']['replied']}  429s {stats['totals']['telegram_429']}  "
            f"p99 {stats['totals']['p99_ms']:.1f} ms",
            f"{'worker':>6} {'pid':>8} {'state':<8} {'bots':>9} {'upd/s':>7} {'repl/s':>7} "
            f"{'waits':>6} {'429s':>5} {'p99 ms':>7}",
        ]
        cur: dict[int, dict[str, int]] = {}
        for w in self.last_status.get("workers", []):
            t = w.get("totals") or {}
            cur[w["index"]] = t
            p = prev.get(w["index"], {})
            lines.append(
                f"{w['index']:>6} {w['pid'] or '-':>8} {w['state']:<8} "
                f"{w['bots_running']:>4}/{w['bots_desired']:<4} "
                f"{t.get('received', 0) - p.get('received', 0):>7} "
                f"{t.get('sent', 0) - p.get('sent', 0):>7} {t.get('limiter_waits', 0):>6} "
                f"{t.get('telegram_429', 0):>5} {w.get('p99_ms') or 0:>7}"
            )
        self._prev_totals = cur
        if self.tty:
            text = "\n".join(lines)
            up = self._lines
            self.view.write((f"\x1b[{up}F\x1b[J" if up else "") + text + "\n")
            self.view.flush()
            self._lines = len(lines)
        elif int(elapsed) % 5 == 0:
            self._say(" | ".join(lines[:1] + lines[2:]))

    def _summary(self, stats: dict[str, Any], ready_s: float, master_exit: int) -> dict[str, Any]:
        workers = self.last_status.get("workers", [])
        return report.summary(
            stats["totals"],
            bots=self.n_bots,
            bots_running=sum(w.get("bots_running", 0) for w in workers),
            workers=len(workers),
            ready_s=ready_s,
            duration_s=self.args.duration,
            worker_restarts=self.last_status.get("worker_restarts", 0),
            master_exit=master_exit,
            interrupted=self.interrupted,
            elapsed_s=time.monotonic() - self._started,
            log_warnings=report.warning_lines(self.state_dir / "daemon.log"),
        )

    def _print_summary(self, s: dict[str, Any]) -> None:
        report.print_summary(s, self.args.json, self._say)


async def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    return await Demo(settings, args).run()
