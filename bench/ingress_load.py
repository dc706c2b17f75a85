#!/usr/bin/env python3
"""The webhook ingress's CPU per update under a fixed rate of keep-alive POSTs.

A child process runs the ingress alone, on uvloop like the master (`WebhookIngress` of
the tree on its PYTHONPATH, a table of secrets in place of the registry), against Redis
under a scratch prefix; this process POSTs `--rate` updates a second over
`--connections` keep-alive connections, one request in flight on each (as Telegram's
`max_connections`), for `--seconds`. Figure: the child's CPU ms per accepted update.
With `--trees A,B` each tree's ingress runs in turn, `--repeat` times, in one
invocation (compare ratios from one run):

    .venv/bin/python bench/ingress_load.py --trees /work/main,$PWD --repeat 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

SECRET = "bench-secret-0123456789abcdef"


async def _serve(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    from bots.telegram import webhook_ingress as wi

    class Secrets:
        async def webhook_secrets(self, bot_ids: list[int]) -> dict[int, str]:
            return dict.fromkeys(bot_ids, SECRET)

    redis = aioredis.Redis.from_url(redis_url)
    ingress = wi.WebhookIngress(
        redis, prefix, 64, Secrets(), backlog_max=10**9, retry_after_s=1, timeout_s=5.0
    )
    appender = asyncio.create_task(ingress.run())
    if hasattr(ingress, "server"):  # the aiohttp one (before httptools)
        from aiohttp import web

        runner = web.ServerRunner(ingress.server())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
    else:
        from bots.telegram.webhook_server import IngressServer

        server = IngressServer(ingress)
        await server.start("127.0.0.1", 0)
        port = server.port
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    appender.cancel()
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def _client(port: int, queue: asyncio.Queue[int], done: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while True:
        bot = await queue.get()
        n += 1
        body = b'{"update_id":%d,"message":{"message_id":%d,"chat":{"id":%d},"text":"hi"}}' % (
            n,
            n,
            bot,
        )
        writer.write(
            b"POST /tg/%d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Telegram-Bot-Api-Secret-Token: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (bot, SECRET.encode(), len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        if head.startswith(b"HTTP/1.1 200"):
            done[0] += 1


async def _redis_cpu(url: str) -> float:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _run_one(tree: str, args: argparse.Namespace) -> dict[str, float]:
    prefix = f"bench-ingress-{uuid.uuid4().hex[:8]}:"
    env = dict(os.environ, PYTHONPATH=tree)
    child = await asyncio.create_subprocess_exec(
        *[sys.executable, __file__, "--serve", "--redis-url", args.redis_url, "--prefix", prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=tree,
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(30):
            port = int(await child.stdout.readline())
        queue: asyncio.Queue[int] = asyncio.Queue()
        done = [0]
        clients = [asyncio.create_task(_client(port, queue, done)) for _ in range(args.connections)]
        proc = psutil.Process(child.pid)
        tick = 0.01
        per_tick = args.rate * tick
        owed = 0.0
        bot = 0

        async def feed(seconds: float) -> None:
            nonlocal owed, bot
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                owed += per_tick
                while owed >= 1:
                    owed -= 1
                    bot = bot % args.bots + 1
                    queue.put_nowait(bot)
                await asyncio.sleep(tick)  # pacing of the load

        await feed(1.0)  # warm-up: connections made, secrets cached
        spy = None
        if args.py_spy is not None:
            out = args.py_spy / f"ingress-{Path(tree).name}-{child.pid}.txt"
            spy = await asyncio.create_subprocess_exec(
                *[str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw", "-o"],
                *[str(out), "-p", str(child.pid), "-d", str(int(args.seconds)), "-r", "200"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        redis0 = await _redis_cpu(args.redis_url)
        cpu0, done0, t0 = proc.cpu_times(), done[0], time.monotonic()
        await feed(args.seconds)
        cpu1, done1, t1 = proc.cpu_times(), done[0], time.monotonic()
        redis1 = await _redis_cpu(args.redis_url)
        backlog = queue.qsize()
        if spy is not None:
            async with asyncio.timeout(30):
                await spy.wait()
        for c in clients:
            c.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        async with asyncio.timeout(30):
            await child.wait()
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    accepted = done1 - done0
    return {
        "updates_per_s": round(accepted / (t1 - t0), 1),
        "cpu_pct": round(100 * cpu / (t1 - t0), 1),
        "cpu_ms_per_update": round(1000 * cpu / max(1, accepted), 4),
        "of_which_system": round((cpu1.system - cpu0.system) / max(cpu, 1e-9), 2),
        # the server's whole CPU: others' use of a shared Redis counts too
        "redis_cpu_ms_per_update": round(1000 * (redis1 - redis0) / max(1, accepted), 4),
        "unsent": backlog,
    }


async def _main(args: argparse.Namespace) -> None:
    trees = args.trees.split(",")
    results: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for rep in range(args.repeat):
        for tree in trees:
            r = await _run_one(tree, args)
            results[tree].append(r)
            print(f"round {rep + 1} {tree}: {r}", flush=True)
    medians = {
        t: statistics.median(r["cpu_ms_per_update"] for r in rs) for t, rs in results.items()
    }
    for t, m in medians.items():
        print(f"median CPU ms/update {m:.4f}  {t}")
    if len(trees) == 2:
        print(f"ratio {trees[1]} / {trees[0]}: {medians[trees[1]] / medians[trees[0]]:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", default=str(Path(__file__).resolve().parent.parent))
    p.add_argument("--rate", type=float, default=1500.0, help="POSTs per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--bots", type=int, default=200)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--py-spy", type=Path, default=None, metavar="DIR", help="profile the child")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(_serve(args.redis_url, args.prefix))
    else:
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
