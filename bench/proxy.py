#!/usr/bin/env python3
"""Long polls through a SOCKS5 proxy: all N bots polling, memory per bot vs direct.

The driver starts an emulator process and a real SOCKS5 proxy process (pproxy, with
user:password checked on every connection), then, one fresh child process per run,
parks N long polls (getUpdates, timeout 25 s) over each client:

  ours-direct     bots/telegram/longpoll.py (the daemon's poll client, alone), no proxy
  ours-socks5     the same through the proxy (python-socks handshake, then our protocol)
  aiohttp-direct  one shared aiohttp session, one parked request per bot (the library
                  alternative to our client)
  aiohttp-socks5  the same through aiohttp-socks' ProxyConnector

Each child warms up with --warm bots first (imports, caches), then measures its RSS
before and after N more bots are all polling (the emulator's count), after a gc:
memory per bot = RSS delta / N. Runs alternate (ABCD ABCD ...) and medians are quoted,
so a noisy machine hits all clients alike.

    .venv/bin/python bench/proxy.py --bots 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    OUT_DIR,
    Children,
    EmulatorLimits,
    free_port,
    machine,
    open_log,
    raise_nofile,
    run_main,
    say,
    start_emulator,
    stop_emulator,
    write_json,
)

from emulators.telegram.control import EmulatorControl  # noqa: E402

MODES = ("ours-direct", "ours-socks5", "aiohttp-direct", "aiohttp-socks5")
POLL_TIMEOUT_S = 25


# ----------------------------------------------------------------------------- child


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    """One client, in a process of its own: RSS per parked poll."""
    import aiohttp
    from python_socks import ProxyError

    from bots.telegram.http1 import HttpProtocolError
    from bots.telegram.longpoll import LongPoll
    from bots.telegram.net import NetOptions
    from config.proxy import parse_proxy

    tokens: list[str] = orjson.loads(Path(args.tokens).read_bytes())
    proxied = args.mode.endswith("socks5")
    me = psutil.Process()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    errors: list[int] = []  # polls that failed and were retried (a busy proxy says no)
    if args.mode.startswith("aiohttp"):
        if proxied:
            from aiohttp_socks import ProxyConnector

            connector: aiohttp.TCPConnector = ProxyConnector.from_url(
                args.proxy, limit=0, rdns=True
            )
        else:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector)
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_S + 10)

        async def poll(token: str) -> None:
            url = f"{args.base}/bot{token}/getUpdates"
            while not stop.is_set():
                try:
                    async with session.post(
                        url, json={"timeout": POLL_TIMEOUT_S}, timeout=timeout
                    ) as r:
                        await r.read()
                except (aiohttp.ClientError, OSError, EOFError, ProxyError):
                    errors.append(1)
                    await asyncio.sleep(0.5)  # as an actor backs off, then polls again

    else:
        session = aiohttp.ClientSession()  # closed at the end like the other mode's
        net = NetOptions(parse_proxy(args.proxy)) if proxied else NetOptions()
        # the client alone (as the aiohttp mode has no limiter or BotApi either)
        clients = {t: LongPoll(args.base, t, net) for t in tokens}
        body = orjson.dumps({"timeout": POLL_TIMEOUT_S})

        async def poll(token: str) -> None:
            client = clients[token]
            while not stop.is_set():
                try:
                    await client.post(body, POLL_TIMEOUT_S + 10)
                except (OSError, HttpProtocolError):  # TimeoutError and ProxyFailed too
                    errors.append(1)
                    await asyncio.sleep(0.5)  # as an actor backs off, then polls again

    async with EmulatorControl(args.base, timeout=60) as ctl:

        async def start(group: list[str]) -> None:
            tasks.extend(asyncio.create_task(poll(t)) for t in group)

        async def all_polling(n: int) -> None:
            """Until `n` polls are parked at the emulator (another process: we ask it)."""
            async with asyncio.timeout(120):
                while (await ctl.totals())["polling_now"] < n:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)

        warm, rest = tokens[: args.warm], tokens[args.warm :]
        await start(warm)
        await all_polling(len(warm))
        await asyncio.sleep(1)
        gc.collect()
        rss0 = me.memory_info().rss
        t = time.perf_counter()
        await start(rest)
        await all_polling(len(tokens))
        ready_s = time.perf_counter() - t
        await asyncio.sleep(2)  # let every handshake finish and buffers settle
        gc.collect()
        rss1 = me.memory_info().rss
        failed = len(errors)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    return {
        "mode": args.mode,
        "bots": len(rest),
        "rss_delta_bytes": rss1 - rss0,
        "bytes_per_bot": (rss1 - rss0) / len(rest),
        "all_polling_s": round(ready_s, 2),
        "polls_retried": failed,
    }


# ----------------------------------------------------------------------------- proxy


async def _serve_proxy(port: int) -> None:
    """pproxy's server in a process of its own (its CLI picks uvloop's loop badly)."""
    import pproxy

    server = pproxy.Server(f"socks5://127.0.0.1:{port}#bench:bench-password")
    # authtime -1: the password is checked on every connection, as a real proxy does
    srv = await server.start_server({"rserver": [], "authtime": -1})
    async with srv:
        await srv.serve_forever()


# ----------------------------------------------------------------------------- driver


async def _run_child(
    children: Children, mode: str, base: str, proxy: str, tokens: Path, warm: int
) -> dict[str, Any]:
    proc = await children.start(
        sys.executable,
        __file__,
        "--child",
        mode,
        "--base",
        base,
        "--proxy",
        proxy,
        "--tokens",
        str(tokens),
        "--warm",
        str(warm),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    out = await asyncio.wait_for(proc.stdout.read(), 300)
    await proc.wait()
    children.procs.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode}: child exited {proc.returncode}")
    return orjson.loads(out.splitlines()[-1])


async def _drive(args: argparse.Namespace) -> int:
    raise_nofile()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    children = Children()
    emu = await start_emulator(
        children, EmulatorLimits(no_limits=True), OUT_DIR / "proxy-emulator.log"
    )
    port = free_port()
    with open_log(OUT_DIR / "proxy-pproxy.log") as log_file:
        pproxy = await children.start(
            sys.executable, __file__, "--serve-proxy", str(port), stdout=log_file, stderr=log_file
        )
    proxy = f"socks5://bench:bench-password@127.0.0.1:{port}"
    try:
        async with EmulatorControl(emu.base_url, timeout=60) as ctl:
            async with asyncio.timeout(30):
                while True:  # the proxy process is up once its port answers
                    try:
                        _, w = await asyncio.open_connection("127.0.0.1", port)
                        w.close()
                        break
                    except OSError:
                        await asyncio.sleep(0.1)
            results: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes}
            for rep in range(args.repeat):
                for mode in args.modes:
                    async with asyncio.timeout(60):  # the last child's polls are gone
                        while (await ctl.totals())["polling_now"] > 0:  # noqa: ASYNC110
                            await asyncio.sleep(0.1)
                    bots = await ctl.create_bots(args.warm + args.bots)
                    tokens = OUT_DIR / "proxy-tokens.json"
                    tokens.write_bytes(orjson.dumps([b.token for b in bots]))
                    r = await _run_child(children, mode, emu.base_url, proxy, tokens, args.warm)
                    r["proxy_rss_bytes"] = psutil.Process(pproxy.pid).memory_info().rss
                    say(
                        f"run {rep + 1} {mode}: {r['bytes_per_bot'] / 1024:.2f} KiB/bot, "
                        f"all {r['bots']} polling in {r['all_polling_s']} s, retried {r['polls_retried']}"
                    )
                    results[mode].append(r)
    finally:
        await children.stop(pproxy, grace_s=5)
        await stop_emulator(children, emu)
        await children.stop_all()
    summary = {
        m: {
            "kib_per_bot_median": round(
                statistics.median(r["bytes_per_bot"] for r in rs) / 1024, 2
            ),
            "kib_per_bot_runs": [round(r["bytes_per_bot"] / 1024, 2) for r in rs],
            "all_polling_s_median": statistics.median(r["all_polling_s"] for r in rs),
            "polls_retried": sum(r["polls_retried"] for r in rs),
        }
        for m, rs in results.items()
    }
    for m, s in summary.items():
        say(
            f"{m:>15}: {s['kib_per_bot_median']:6.2f} KiB/bot (runs {s['kib_per_bot_runs']}), "
            f"all polling in {s['all_polling_s_median']} s"
        )
    path = write_json(
        "proxy", {"machine": machine(), "args": vars(args), "summary": summary, "runs": results}
    )
    say(f"wrote {path}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--bots", type=int, default=1000)
    p.add_argument("--warm", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--proxy", help=argparse.SUPPRESS)
    p.add_argument("--tokens", help=argparse.SUPPRESS)
    p.add_argument("--serve-proxy", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_proxy:
        asyncio.run(_serve_proxy(args.serve_proxy))
        return 0
    if args.child:
        args.mode = args.child
        import uvloop

        result = uvloop.run(_child(args))
        print(orjson.dumps(result).decode(), flush=True)
        return 0
    return run_main(lambda: _drive(args))


if __name__ == "__main__":
    sys.exit(main())
