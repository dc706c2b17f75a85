"""The durable inbox (issue 9): head-of-line latency and cost per update, inbox on vs off.

In one process, against the in-process Telegram emulator (rate limits off) and a
private redis-server on a unix socket, the way a worker runs them: `BotActor`s, the
worker's `Inbox` (ack flusher) and `InboxReader`, the `RedisProgress` flusher.

(a) latency: `--rate` messages/s round-robin over `--bots` x `--chats` chats (a chat's
    next message comes after its previous one is answered: per-chat order adds
    nothing), handler = sleep `--delay` s then reply. botvisor's added latency = the
    emulator's inject -> reply time minus the delay; p50/p99, inbox on and off.
(b) cost: `--cost-bots` bots, echo handler, `--cost-messages` messages at `--cost-rate`
    per s: process CPU s per 1,000 updates (this process, emulator included in both),
    redis-server CPU per 1,000 updates, and the inbox's Redis round trips per update.

    .venv/bin/python bench/inbox_bench.py            # both, both modes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bots.actor.actor import BotActor  # noqa: E402
from bots.actor.policy import BackoffConfig  # noqa: E402
from bots.actor.spec import BotSpec, PollConfig  # noqa: E402
from bots.actor.supervise import BotHandle, spawn  # noqa: E402
from bots.handlers.base import BotContext  # noqa: E402
from bots.telegram.api import BotApi  # noqa: E402
from bots.telegram.token import BotToken  # noqa: E402
from bots.telegram.update import Incoming  # noqa: E402
from emulators.telegram.server import RunningEmulator, open_emulator  # noqa: E402
from ipc.inbox import Inbox  # noqa: E402
from ipc.offsets import RedisProgress  # noqa: E402
from ipc.redis_client import redis_client  # noqa: E402
from ratelimit import BotLimiter, Limits  # noqa: E402
from supervisor.worker.inbox_reader import InboxReader  # noqa: E402

SHARDS = 64


class Delay:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        await ctx.api.send_message(update.chat_id, "ok", reply_to=update.message_id)


async def _never(bot_id: int, reason: str) -> None:
    raise RuntimeError(f"bot {bot_id} disabled: {reason}")


class Rig:
    """A worker's bots and services, inbox on or off."""

    def __init__(self, redis: aioredis.Redis, prefix: str, inbox: bool) -> None:
        self.redis = redis
        self.progress = RedisProgress(redis, prefix, 2.0)
        self.inbox = Inbox(redis, prefix, SHARDS, "bench", 2.0, 1_000_000, 30.0) if inbox else None
        self.handles: dict[int, BotHandle] = {}
        self.tasks: list[asyncio.Task[None]] = [asyncio.create_task(self.progress.run())]
        if self.inbox is not None:
            self.reader = InboxReader(self.inbox, self.handles, lambda: list(range(SHARDS)))
            self.tasks += [
                asyncio.create_task(self.inbox.run()),
                asyncio.create_task(self.reader.run()),
            ]

    async def start(
        self, emu: RunningEmulator, session: aiohttp.ClientSession, tokens: list[str], delay: float
    ) -> None:
        async def one(token: str) -> None:
            t = BotToken(token)
            api = BotApi(
                session,
                emu.base_url,
                t,
                BotLimiter(Limits.telegram_defaults()),
                request_timeout=10,
                max_retries=2,
            )
            poll = PollConfig(10, 200, 5.0)
            actor = BotActor(
                BotSpec(t.bot_id, t, "bench", {}, 1),
                api,
                Delay(delay),
                poll,
                self.progress,
                None,
                self.inbox,
            )
            handle = self.handles[t.bot_id] = BotHandle(actor)
            await spawn(handle, BackoffConfig(0.5, 5), _never)

        await asyncio.gather(*(one(t) for t in tokens))

    async def stop(self) -> None:
        await asyncio.gather(*(h.stop() for h in self.handles.values()))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _redis_cpu(redis: aioredis.Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def drive(
    emu: RunningEmulator, bot_ids: list[int], chats: int, rate: float, count: int
) -> None:
    """`count` messages at `rate`/s, round-robin over bots, then chats; waits for all."""
    start = emu.state.replied
    t0 = time.monotonic()
    for i in range(count):
        bot = bot_ids[i % len(bot_ids)]
        chat = 1 + (i // len(bot_ids)) % chats
        emu.state.inject([{"bot_id": bot, "chat_id": chat, "text": "m"}])
        delay = t0 + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the open-loop load
    async with asyncio.timeout(120):
        await emu.state.wait_until(lambda: emu.state.replied - start >= count)


async def run_mode(
    redis: aioredis.Redis, inbox: bool, args: argparse.Namespace, phase: str
) -> dict[str, Any]:
    prefix = f"bench{os.getpid()}:{phase}:{int(inbox)}:"
    bots = args.bots if phase == "latency" else args.cost_bots
    delay = args.delay if phase == "latency" else 0.0
    async with open_emulator(rate_limits=False) as emu, aiohttp.ClientSession() as session:
        created = emu.state.create_bots(bots)
        rig = Rig(redis, prefix, inbox)
        await rig.start(emu, session, [b.token for b in created], delay)
        ids = [b.id for b in created]
        try:
            # warm-up, then measure
            await drive(emu, ids, args.chats, args.rate, min(100, len(ids)))
            first = len(emu.state.latencies_ms)
            cpu0, rcpu0 = time.process_time(), await _redis_cpu(redis)
            trips0 = rig.inbox.round_trips if rig.inbox else 0
            if phase == "latency":
                await drive(emu, ids, args.chats, args.rate, args.messages)
                n = args.messages
            else:
                await drive(emu, ids, 1_000_000, args.cost_rate, args.cost_messages)
                n = args.cost_messages
            cpu, rcpu = time.process_time() - cpu0, await _redis_cpu(redis) - rcpu0
            trips = (rig.inbox.round_trips - trips0) if rig.inbox else 0
            lat = sorted(v - delay * 1000 for v in emu.state.latencies_ms[first:])
        finally:
            await rig.stop()
        dups = emu.state.duplicates
    out: dict[str, Any] = {"inbox": inbox, "phase": phase, "bots": bots, "messages": n}
    if phase == "latency":
        out["added_p50_ms"] = round(statistics.median(lat), 1)
        out["added_p99_ms"] = round(lat[int(0.99 * (len(lat) - 1))], 1)
    else:
        out["cpu_s_per_1k"] = round(cpu / n * 1000, 3)
        out["redis_cpu_s_per_1k"] = round(rcpu / n * 1000, 3)
        out["inbox_round_trips_per_update"] = round(trips / n, 3)
    out["duplicates"] = dups
    return out


async def main(args: argparse.Namespace) -> int:
    from config.logging import configure_logging

    configure_logging("warning", "console")
    server = shutil.which("redis-server")
    if server is None:
        print("redis-server not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bv-inbox-bench-") as tmp:
        sock = Path(tmp) / "r.sock"
        proc = await asyncio.create_subprocess_exec(
            server, "--port", "0", "--unixsocket", str(sock), "--save", "",
            "--appendonly", "no", stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with asyncio.timeout(10):
                while not sock.exists():  # noqa: ASYNC110 - waiting for a child's socket
                    await asyncio.sleep(0.05)
            redis = redis_client(f"unix://{sock}", 5.0, 64)
            results = []
            for phase in args.phases.split(","):
                for inbox in (False, True):
                    r = await run_mode(redis, inbox, args, phase)
                    print(json.dumps(r), flush=True)
                    results.append(r)
            await redis.aclose()
        finally:
            proc.kill()
            await proc.wait()
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} cpus, Python {platform.python_version()}",
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "load": os.getloadavg(),
            }
        )
    )
    return 0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--phases", default="latency,cost")
    p.add_argument("--bots", type=int, default=20)
    p.add_argument("--chats", type=int, default=5)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--messages", type=int, default=1500)
    p.add_argument("--delay", type=float, default=1.0)
    p.add_argument("--cost-bots", type=int, default=1000)
    p.add_argument("--cost-rate", type=float, default=500.0)
    p.add_argument("--cost-messages", type=int, default=10_000)
    return p.parse_args()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(main(parse())))
