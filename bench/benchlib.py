"""Shared parts of the fleet benchmarks (`fleet.py`, `aiogram_baseline.py`, `run_all.py`).

The system under test (SUT: the botvisor daemon, or one aiogram process) runs as its
own process tree against its own emulator process; this process only drives traffic
through the emulator's control API and samples the SUT's RSS and CPU with psutil.
Every child is started in its own session (Ctrl-C reaches only us) with
PR_SET_PDEATHSIG, tracked in `Children`, and stopped by PID at the end.

Phases, identical for every SUT:
  startup     time from SUT process start until all N bots have sent a getUpdates
              (emulator `polling_since(t0)`, checked every 50 ms)
  idle        RSS/USS of the SUT's processes once all poll and ~3 s have passed
  throughput  closed loop: `inflight` messages kept outstanding (inject tops up every
              20 ms) spread round-robin over all bots and many chats; replies/s and
              SUT CPU seconds over the window
  latency     open loop at a fixed rate (0.5 x the measured throughput); the emulator's
              inject -> reply latency p50/p99 after reset_stats()
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulators.telegram.control import EmulatorControl  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
#: First chat id used by the traffic generator (private chats: positive ids).
CHAT_BASE = 10_000


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def raise_nofile() -> int:
    """Thousands of sockets: lift the soft open-files limit to the hard one (inherited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_log(path: Path) -> IO[bytes]:
    """A log file for a child's stdout/stderr (the child keeps its own descriptor)."""
    return open(path, "wb")  # closed by the caller's `with`


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------- child processes


class Children:
    """Every process the benchmark starts; `stop_all` stops them by PID, newest first."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        #: child pid -> its own children to kill if it could not stop them (daemon workers)
        self.orphans: dict[int, set[int]] = {}

    async def start(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        stdin: int | None = asyncio.subprocess.DEVNULL,
    ) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.procs.append(proc)
        return proc

    async def stop(
        self, proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM, grace_s: float = 30.0
    ) -> int | None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL; also kills its recorded orphans."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                say(f"bench: pid {proc.pid} ignored signal {sig} for {grace_s:g} s; SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10)
        if proc in self.procs:
            self.procs.remove(proc)
        self._kill_orphans(proc.pid)
        return proc.returncode

    def _kill_orphans(self, parent: int) -> None:
        for pid in self.orphans.pop(parent, set()):
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    say(f"bench: leftover pid {pid} ({p.name()}) of {parent}; SIGKILL")
                    p.kill()
            except psutil.Error:
                pass

    async def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            await self.stop(proc)
        for parent in list(self.orphans):
            self._kill_orphans(parent)


# --------------------------------------------------------------------------- emulator


@dataclass
class Emulator:
    proc: asyncio.subprocess.Process
    base_url: str
    drain: asyncio.Task[None] = field(repr=False)


@dataclass(frozen=True)
class EmulatorLimits:
    """Flood limits the emulator enforces. Per chat/group stay Telegram's; per bot is
    lifted by default so that 100 bots are not capped at 30 msg/s each."""

    per_bot: str = "100/0.001"  # 100k/s: a small ring per bot, never binds
    per_chat: str = "1/1"
    per_group: str = "20/60"
    no_limits: bool = False

    def argv(self) -> list[str]:
        if self.no_limits:
            return ["--no-limits"]
        return [
            "--per-bot",
            self.per_bot,
            "--per-chat",
            self.per_chat,
            "--per-group",
            self.per_group,
        ]


async def start_emulator(
    children: Children,
    limits: EmulatorLimits,
    log_path: Path,
    ready_within_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> Emulator:
    with open_log(log_path) as log_file:
        proc = await children.start(
            sys.executable,
            "-m",
            "emulators.telegram",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--sent-log-limit",
            "0",
            *limits.argv(),
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            env=env,
        )
    ready, drain = await read_ready(
        children, proc, ready_within_s, f"emulator exited before it was ready; see {log_path}"
    )
    return Emulator(proc, f"http://127.0.0.1:{int(ready['port'])}", drain)


async def read_ready(
    children: Children, proc: asyncio.subprocess.Process, within_s: float, failure: str
) -> tuple[dict[str, Any], asyncio.Task[None]]:
    """An emulator child's `emulator.ready` line (its ports), and a task that drains the rest
    of its stdout so it never fills up. Stops the child if it is not ready in time."""
    assert proc.stdout is not None
    stdout = proc.stdout
    try:
        async with asyncio.timeout(within_s):
            while True:
                line = await stdout.readline()
                if not line:
                    raise RuntimeError(failure)
                if line.startswith(b'{"event":"emulator.ready"'):
                    ready: dict[str, Any] = orjson.loads(line)
                    break
    except BaseException:
        await children.stop(proc)
        raise

    async def drain() -> None:
        while await stdout.read(65536):
            pass

    return ready, asyncio.create_task(drain())


async def stop_emulator(children: Children, emu: Emulator) -> None:
    await children.stop(emu.proc, grace_s=10)
    emu.drain.cancel()
    await asyncio.gather(emu.drain, return_exceptions=True)


def gc_probe_env(out_dir: Path, whatif: str = "none") -> dict[str, str]:
    """Environment for a child that loads bench/gcprobe/sitecustomize.py (GC pause log)."""
    env = dict(os.environ)
    probe = str(ROOT / "bench" / "gcprobe")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (probe, env.get("PYTHONPATH", "")) if p)
    env["BENCH_GC_PROBE_DIR"] = str(out_dir)
    env["BENCH_GC_WHATIF"] = whatif
    return env


def read_gc_probe(out_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(out_dir.glob("gc-*.json")):
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            out.append(orjson.loads(path.read_bytes()))
    return out


# --------------------------------------------------------------------------- services


@contextlib.asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database botvisor_bench_<hex> for one run; dropped (WITH FORCE) after."""
    name = f"botvisor_bench_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"', timeout=30)
    finally:
        await conn.close(timeout=5)
    base, _, _ = admin_dsn.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=60)
        finally:
            await conn.close(timeout=5)


async def drop_redis_prefix(url: str, prefix: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    n = 0
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            n += int(await client.delete(key))
    finally:
        await client.aclose()
    return n


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    async def wait_for(self, line: str, within_s: float) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within_s):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                if line in data.decode(errors="replace").split("\n"):
                    return

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# --------------------------------------------------------------------------- SUT sampling


class Sut:
    """The processes whose RSS and CPU are charged to the system under test."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_process())

    def cpu_by_process(self) -> list[float]:
        """CPU seconds (user + system) of each process, in `pids` order."""
        out = []
        for p in self.procs:
            t = p.cpu_times()
            out.append(t.user + t.system)
        return out

    def memory(self) -> tuple[int, int | None]:
        """(RSS, USS) summed over the processes, bytes; USS None where not readable."""
        rss = 0
        uss: int | None = 0
        for p in self.procs:
            try:
                info = p.memory_full_info()
                rss += info.rss
                if uss is not None:
                    uss += info.uss
            except psutil.AccessDenied:
                rss += p.memory_info().rss
                uss = None
        return rss, uss

    def alive(self) -> bool:
        return all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in self.procs)


def cpu_of(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) of the whole machine, all cores."""
    t = psutil.cpu_times()
    total = sum(t)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


async def idle_memory(sut: Sut, settle_s: float, samples: int = 3) -> dict[str, Any]:
    """Median of `samples` RSS/USS readings 0.5 s apart, after `settle_s` of quiet."""
    await asyncio.sleep(settle_s)
    rss: list[int] = []
    uss: list[int] = []
    for i in range(samples):
        r, u = sut.memory()
        rss.append(r)
        if u is not None:
            uss.append(u)
        if i + 1 < samples:
            await asyncio.sleep(0.5)
    return {
        "rss_mib": round(statistics.median(rss) / 2**20, 2),
        "uss_mib": round(statistics.median(uss) / 2**20, 2) if uss else None,
        "procs": len(sut.procs),
    }


async def profile_pids(
    children: Children,
    pids: list[int],
    out: Path,
    seconds: float,
    names: Sequence[str] | None = None,
) -> None:
    """py-spy record (non-blocking sampling, raw collapsed stacks) + one dump per pid.

    Output: DIR/<name>.collapsed.txt (see bench/pyspy_top.py) and <name>.dump.txt; the
    names default to worker<i>.
    """
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        say("  py-spy not installed in the venv; skipping the profile")
        return
    os.makedirs(out, exist_ok=True)
    procs = []
    labels = list(names) if names is not None else [f"worker{i}" for i in range(len(pids))]
    for name, pid in zip(labels, pids, strict=True):
        with open_log(out / f"{name}.dump.txt") as fh:
            dump = await children.start(
                py_spy, "dump", "--nonblocking", "-p", str(pid), stdout=fh, stderr=fh
            )
        await children.stop(dump, grace_s=30)
        with open_log(out / f"{name}.record.log") as fh:
            procs.append(
                await children.start(
                    py_spy,
                    "record",
                    "--nonblocking",
                    "-r",
                    "200",
                    "-d",
                    str(int(seconds)),
                    "-f",
                    "raw",
                    "-o",
                    str(out / f"{name}.collapsed.txt"),
                    "-p",
                    str(pid),
                    stdout=fh,
                    stderr=fh,
                )
            )
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), seconds + 30)
        finally:
            await children.stop(proc, grace_s=5)
    say(f"  py-spy profiles in {out}")


# --------------------------------------------------------------------------- traffic


class Traffic:
    """Round-robin over (bot, chat) pairs: message i goes to bot i % N, chat i // N % C.

    Consecutive messages hit different bots; one chat gets one message every
    N * C messages, so at R msg/s a chat sees one per N*C/R seconds (kept > 1 s so
    Telegram's per-chat limit never binds) and a bot R/N per second.
    """

    def __init__(self, bot_ids: Sequence[int], pairs: int) -> None:
        self.bot_ids = list(bot_ids)
        self.chats = max(1, -(-pairs // len(self.bot_ids)))
        self.period = len(self.bot_ids) * self.chats
        self.i = 0

    def batch(self, k: int) -> list[dict[str, Any]]:
        n = len(self.bot_ids)
        out = []
        for _ in range(k):
            i = self.i % self.period
            out.append(
                {
                    "bot_id": self.bot_ids[i % n],
                    "chat_id": CHAT_BASE + i // n,
                    "text": f"bench {self.i}",
                }
            )
            self.i += 1
        return out

    def min_chat_gap_s(self, rate: float) -> float:
        return self.period / rate if rate > 0 else float("inf")


async def wait_all_polling(
    ctl: EmulatorControl, t0_emu: float, n: int, within_s: float, interval: float = 0.05
) -> float:
    """Seconds (perf_counter, from now) until `n` bots have polled since emulator time t0."""
    start = time.perf_counter()
    async with asyncio.timeout(within_s):
        # the emulator is another process: asking it every 50 ms is the measurement
        while await ctl.polling_since(t0_emu) < n:  # noqa: ASYNC110
            await asyncio.sleep(interval)
    return time.perf_counter() - start


async def wait_all_webhooks(
    ctl: EmulatorControl, n: int, within_s: float, interval: float = 0.05
) -> float:
    """Seconds until `n` bots have a webhook set at the emulator (webhook mode's "polling")."""
    start = time.perf_counter()
    async with asyncio.timeout(within_s):
        while (await ctl.totals())["webhooks_set"] < n:  # noqa: ASYNC110 - another process
            await asyncio.sleep(interval)
    return time.perf_counter() - start


async def redis_cpu_seconds(url: str) -> float:
    """CPU seconds (user + sys) the Redis server has used since it started (INFO cpu)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def settle(ctl: EmulatorControl, within_s: float = 30.0) -> dict[str, Any]:
    """Wait (bounded) until every injected message has its reply; the final totals."""
    deadline = time.monotonic() + within_s
    while True:
        t = await ctl.totals()
        if t["replied"] >= t["injected"] or time.monotonic() >= deadline:
            return t
        await asyncio.sleep(0.1)


async def closed_loop(
    ctl: EmulatorControl,
    traffic: Traffic,
    sut: Sut,
    emu_pid: int,
    *,
    inflight: int,
    warmup_s: float,
    seconds: float,
    tick_s: float = 0.02,
    during: Callable[[], Coroutine[Any, Any, None]] | None = None,
    extra_cpu: Callable[[], Awaitable[float]] | None = None,
) -> dict[str, Any]:
    """Keep `inflight` messages outstanding; measure replies/s and CPU over `seconds`
    (`extra_cpu`: another process's CPU seconds so far, e.g. Redis's, charged separately)."""
    await ctl.reset_stats()
    stop = asyncio.Event()
    injected_by_us = 0

    async def top_up() -> None:
        nonlocal injected_by_us
        while not stop.is_set():
            t0 = time.perf_counter()
            tot = await ctl.totals()
            deficit = inflight - (tot["injected"] - tot["replied"])
            if deficit > 0:
                await ctl.inject(traffic.batch(deficit))
                injected_by_us += deficit
            await asyncio.sleep(max(0.0, tick_s - (time.perf_counter() - t0)))

    feeder = asyncio.create_task(top_up())
    try:
        await asyncio.sleep(warmup_s)
        s0 = await ctl.stats(per_bot=False)
        p0 = sut.cpu_by_process()
        c0, e0, d0, w0 = (
            sum(p0),
            cpu_of(emu_pid),
            cpu_of(os.getpid()),
            time.perf_counter(),
        )
        m0 = machine_busy()
        x0 = await extra_cpu() if extra_cpu is not None else 0.0
        side = asyncio.create_task(during()) if during is not None else None
        await asyncio.sleep(seconds)
        x1 = await extra_cpu() if extra_cpu is not None else 0.0
        s1 = await ctl.stats(per_bot=False)
        p1 = sut.cpu_by_process()
        c1, e1, d1, w1 = (
            sum(p1),
            cpu_of(emu_pid),
            cpu_of(os.getpid()),
            time.perf_counter(),
        )
        m1 = machine_busy()
        if side is not None:
            await side
    finally:
        stop.set()
        await asyncio.gather(feeder, return_exceptions=True)
    if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
        raise RuntimeError(f"traffic feeder failed: {feeder.exception()!r}")
    dt = s1["now"] - s0["now"]
    replied = s1["totals"]["replied"] - s0["totals"]["replied"]
    polls = s1["totals"]["get_updates"] - s0["totals"]["get_updates"]
    cpu = c1 - c0
    rate = replied / dt if dt > 0 else 0.0
    final = await settle(ctl)
    return {
        "inflight": inflight,
        "seconds": round(dt, 2),
        "replies": replied,
        "replies_per_s": round(rate, 1),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_1k": round(1000 * cpu / replied, 3) if replied else None,
        "extra_cpu_s_per_1k": (
            round(1000 * (x1 - x0) / replied, 3) if replied and extra_cpu is not None else None
        ),
        # getUpdates calls the emulator answered per reply sent (1 is the floor at
        # one update per poll; re-deliveries of unconfirmed updates push it up)
        "get_updates_per_reply": round(polls / replied, 2) if replied else None,
        "sut_cpu_pct": round(100 * cpu / (w1 - w0), 1),
        # each process of the SUT (`Sut.pids` order: the daemon's master first)
        "sut_cpu_pct_by_process": [
            round(100 * (b - a) / (w1 - w0), 1) for a, b in zip(p0, p1, strict=True)
        ],
        "emulator_cpu_pct": round(100 * (e1 - e0) / (w1 - w0), 1),
        "driver_cpu_pct": round(100 * (d1 - d0) / (w1 - w0), 1),
        # everything on the box (this is a shared machine): 100% = all cores busy
        "machine_busy_pct": round(100 * (m1[0] - m0[0]) / max(1e-9, m1[1] - m0[1]), 1),
        "others_cpu_pct": round(
            100 * ((m1[0] - m0[0]) - cpu - (e1 - e0) - (d1 - d0)) / (w1 - w0), 1
        ),
        "chat_gap_s": round(traffic.min_chat_gap_s(rate), 1),
        "injected": final["injected"],
        "lost": final["lost"],
        "telegram_429": final["telegram_429"],
        "p50_ms": final["p50_ms"],
        "p99_ms": final["p99_ms"],
    }


async def open_loop(
    ctl: EmulatorControl,
    traffic: Traffic,
    *,
    rate: float,
    seconds: float,
    tick_s: float = 0.02,
) -> dict[str, Any]:
    """Inject at a fixed `rate` for `seconds`; the emulator's inject -> reply latency."""
    await ctl.reset_stats()
    start = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(rate * elapsed) - sent
        if due > 0:
            await ctl.inject(traffic.batch(due))
            sent += due
        await asyncio.sleep(max(0.0, tick_s - (time.perf_counter() - start - elapsed)))
    final = await settle(ctl)
    return {
        "rate": round(rate, 1),
        "seconds": seconds,
        "injected": final["injected"],
        "replied": final["replied"],
        "lost": final["lost"],
        "telegram_429": final["telegram_429"],
        "duplicates": final["duplicates"],
        "get_updates_per_reply": (
            round(final["get_updates"] / final["replied"], 2) if final["replied"] else None
        ),
        "p50_ms": final["p50_ms"],
        "p99_ms": final["p99_ms"],
        "chat_gap_s": round(traffic.min_chat_gap_s(rate), 1),
    }


@dataclass(frozen=True)
class Phases:
    """What to measure in one run (an N0 run only needs startup and idle)."""

    traffic: bool = True
    inflight: int = 1000
    pairs: int = 40_000
    warmup_s: float = 2.0
    seconds: float = 10.0
    latency_s: float = 10.0
    latency_fraction: float = 0.5
    #: a fixed rate for the latency phase instead (msg/s)
    latency_rate: float | None = None
    settle_s: float = 3.0

    def startup_timeout(self, n: int) -> float:
        return 60.0 + 0.05 * n


async def measure_traffic(
    ctl: EmulatorControl,
    bot_ids: Sequence[int],
    sut: Sut,
    emu_pid: int,
    ph: Phases,
    during: Callable[[], Coroutine[Any, Any, None]] | None = None,
    extra_cpu: Callable[[], Awaitable[float]] | None = None,
) -> dict[str, Any]:
    """The throughput phase, then the latency phase at `latency_fraction` of its rate
    (or at `ph.latency_rate`, when set: runs compared at one rate)."""
    traffic = Traffic(bot_ids, ph.pairs)
    say(
        f"  throughput: {ph.inflight} in flight, {ph.seconds:g} s "
        f"({len(bot_ids)} bots x {traffic.chats} chats)"
    )
    thr = await closed_loop(
        ctl,
        traffic,
        sut,
        emu_pid,
        inflight=ph.inflight,
        warmup_s=ph.warmup_s,
        seconds=ph.seconds,
        during=during,
        extra_cpu=extra_cpu,
    )
    say(
        f"    {thr['replies_per_s']:.0f} replies/s, {thr['cpu_s_per_1k']} CPU s/1k, "
        f"{thr['get_updates_per_reply']} getUpdates/reply, machine {thr['machine_busy_pct']}% busy, "
        f"SUT {thr['sut_cpu_pct']}% emulator {thr['emulator_cpu_pct']}% CPU, "
        f"lost {thr['lost']}, 429s {thr['telegram_429']}"
    )
    rate = ph.latency_rate or max(1.0, thr["replies_per_s"] * ph.latency_fraction)
    say(f"  latency: {rate:.0f} msg/s for {ph.latency_s:g} s")
    lat = await open_loop(ctl, traffic, rate=rate, seconds=ph.latency_s)
    say(
        f"    p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, lost {lat['lost']}, "
        f"429s {lat['telegram_429']}"
    )
    return {"throughput": thr, "latency": lat}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def write_json(name: str, data: Any) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return path


def parse_sizes(text: str) -> list[int]:
    sizes = [int(x) for x in text.replace(" ", "").split(",") if x]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"bad sizes {text!r}: need positive integers, e.g. 100,1000")
    return sizes


def run_main(coro_fn: Callable[[], Awaitable[int]]) -> int:
    """asyncio.run with SIGTERM treated like Ctrl-C (cancel, so every `finally` cleans up)."""

    async def wrapper() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro_fn()

    raise_nofile()
    try:
        return asyncio.run(wrapper())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("bench: interrupted; children stopped")
        return 130
