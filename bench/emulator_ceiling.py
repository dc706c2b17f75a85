#!/usr/bin/env python3
"""How many sendMessage/s the Bot API emulator sustains (its "ceiling").

Starts `python -m emulators.telegram --no-limits` as its own process, parks M idle
long polls on it (getUpdates timeout=50, never answered), then drives N
concurrent sendMessage loops (one keep-alive connection each, one request in
flight per loop) from `--client-procs` separate client processes, using a
minimal raw HTTP/1.1 client so the client side stays cheap.

Throughput is measured on the emulator's side (delta of `/control/stats`
totals.sent over each window), so it does not depend on how the client
counts. Reported: median of `--runs` windows of `--seconds` each, the
emulator's CPU share in each window (~100% = the emulator is the bottleneck),
sendMessage per emulator CPU-second (its one-core ceiling, meaningful even on
a shared box), its RSS with the long polls parked, and client-side latency.

The last line of output is one JSON object.

    .venv/bin/python bench/emulator_ceiling.py --senders 64 --polls 5000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulators.telegram.control import EmulatorControl  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# --------------------------------------------------------------------------- emulator process


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def start_emulator(host: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators.telegram",
            "--host",
            host,
            "--port",
            "0",
            "--no-limits",
            "--sent-log-limit",
            "100",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        if raw.startswith(b'{"event":"emulator.ready"'):
            port = int(orjson.loads(raw)["port"])
            break
    else:
        raise SystemExit("emulator exited before it was ready")
    stdout = proc.stdout
    # keep draining its log lines so it never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()
    return proc, port


# --------------------------------------------------------------------------- raw HTTP client


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.index(b"content-length:") + 15
    length = int(head[i : head.index(b"\r\n", i)])
    return status, await reader.readexactly(length)


async def send_loop(
    host: str,
    port: int,
    token: str,
    chats: int,
    deadline: float,
    lat: list[float],
    counts: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    base = random.randrange(1, 10**9)
    reqs = [
        _request(
            host,
            port,
            f"/bot{token}/sendMessage",
            orjson.dumps({"chat_id": base + c, "text": f"benchmark message {c}"}),
        )
        for c in range(chats)
    ]
    i = 0
    ok = bad = 0
    clock = time.perf_counter
    while True:
        t = clock()
        if t >= deadline:
            break
        writer.write(reqs[i % chats])
        status, _ = await _read_response(reader)
        if status == 200:
            ok += 1
        else:
            bad += 1
        if i & 15 == 0:
            lat.append(clock() - t)
        i += 1
    writer.close()
    counts[0] += ok
    counts[1] += bad


def sender_process(
    host: str, port: int, tokens: list[str], chats: int, seconds: float, out: Any
) -> None:
    _raise_nofile()
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    lat: list[float] = []
    counts = [0, 0]
    deadline = time.perf_counter() + seconds

    async def main() -> None:
        await asyncio.gather(
            *(send_loop(host, port, t, chats, deadline, lat, counts) for t in tokens)
        )

    loop.run_until_complete(main())
    loop.close()
    lat.sort()
    out.put(
        {
            "ok": counts[0],
            "errors": counts[1],
            "lat_p50_ms": round(lat[len(lat) // 2] * 1000, 3) if lat else None,
            "lat_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 3) if lat else None,
        }
    )


async def idle_poll(
    host: str, port: int, token: str, stop: asyncio.Event, connect_gate: asyncio.Semaphore
) -> None:
    async with connect_gate:  # do not stampede the accept queue
        reader, writer = await asyncio.open_connection(host, port)
    req = _request(host, port, f"/bot{token}/getUpdates", b'{"timeout":50}')
    try:
        while not stop.is_set():
            writer.write(req)
            await _read_response(reader)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


# --------------------------------------------------------------------------- orchestration


async def bench(args: argparse.Namespace, host: str, port: int, pid: int) -> dict[str, Any]:
    base_url = f"http://{host}:{port}"
    async with EmulatorControl(base_url, timeout=60) as ctl:
        senders = await ctl.create_bots(args.senders)
        pollers = await ctl.create_bots(args.polls) if args.polls else []
        rss_start = rss_mb(pid)

        stop = asyncio.Event()
        gate = asyncio.Semaphore(500)
        poll_tasks = [
            asyncio.create_task(idle_poll(host, port, b.token, stop, gate)) for b in pollers
        ]
        t0 = time.perf_counter()
        while (await ctl.totals())["polling_now"] < args.polls:
            if time.perf_counter() - t0 > 60:
                raise SystemExit("long polls did not all park within 60 s")
            await asyncio.sleep(0.2)
        park_s = time.perf_counter() - t0
        rss_polls = rss_mb(pid)

        # sender processes run for warmup + all windows (+ slack); we measure windows inside.
        total = args.warmup + args.runs * args.seconds + 1.0
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        tokens = [b.token for b in senders]
        shares = [tokens[i :: args.client_procs] for i in range(args.client_procs)]
        procs = [
            ctx.Process(
                target=sender_process, args=(host, port, share, args.chats, total, out), daemon=True
            )
            for share in shares
            if share
        ]
        for p in procs:
            p.start()
        await asyncio.sleep(args.warmup)

        runs: list[dict[str, float]] = []
        for _ in range(args.runs):
            s0 = await ctl.totals()
            n0 = await ctl.now()
            c0 = cpu_seconds(pid)
            w0 = time.perf_counter()
            await asyncio.sleep(args.seconds)
            s1 = await ctl.totals()
            n1 = await ctl.now()
            c1 = cpu_seconds(pid)
            w1 = time.perf_counter()
            dt = n1 - n0
            sent = s1["sent"] - s0["sent"]
            runs.append(
                {
                    "send_rps": round(sent / dt, 1),
                    "server_cpu_pct": round(100 * (c1 - c0) / (w1 - w0), 1),
                    "send_per_cpu_s": round(sent / (c1 - c0), 1) if c1 > c0 else 0.0,
                }
            )
            print(f"run {len(runs)}: {runs[-1]}", file=sys.stderr, flush=True)
        polling_after = (await ctl.totals())["polling_now"]
        rss_end = rss_mb(pid)

        results = [await asyncio.to_thread(out.get, True, total + 30) for _ in procs]
        for p in procs:
            p.join(10)
        stop.set()
        for t in poll_tasks:
            t.cancel()
        await asyncio.gather(*poll_tasks, return_exceptions=True)

    rps = [r["send_rps"] for r in runs]
    return {
        "bench": "emulator_ceiling",
        "send_rps_median": statistics.median(rps),
        "send_rps_runs": rps,
        "server_cpu_pct_runs": [r["server_cpu_pct"] for r in runs],
        # sendMessage handled per second of emulator CPU: the one-core ceiling even when
        # the box is shared (a run at ~100% CPU measures it directly)
        "send_per_cpu_s_median": statistics.median(r["send_per_cpu_s"] for r in runs),
        "senders": args.senders,
        "client_procs": len(procs),
        "idle_long_polls": args.polls,
        "polls_parked_s": round(park_s, 2),
        "polls_still_pending_after": polling_after,
        "rss_mb_start": rss_start,
        "rss_mb_with_polls": rss_polls,
        "rss_mb_end": rss_end,
        "client_errors": sum(r["errors"] for r in results),
        "client_lat_p50_ms": max((r["lat_p50_ms"] or 0) for r in results) if results else None,
        "client_lat_p99_ms": max((r["lat_p99_ms"] or 0) for r in results) if results else None,
        "seconds_per_run": args.seconds,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description="Measure the Bot API emulator's sendMessage ceiling with idle long polls parked."
    )
    p.add_argument(
        "--senders", type=int, default=64, help="concurrent sendMessage loops (one bot each)"
    )
    p.add_argument("--polls", type=int, default=5000, help="idle long polls parked meanwhile")
    p.add_argument(
        "--chats", type=int, default=200, help="distinct chats each sender cycles through"
    )
    p.add_argument("--client-procs", type=int, default=1, help="client processes for the senders")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0, help="length of one measured window")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args()

    _raise_nofile()
    proc, port = start_emulator(args.host)
    try:
        loop = _new_loop()
        result = loop.run_until_complete(bench(args, args.host, port, proc.pid))
        loop.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
