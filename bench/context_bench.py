"""Context store benchmark: load/save latency per layer, memory per cached chat, hit rates.

    .venv/bin/python bench/context_bench.py [--chats 100000] [--bots 100] [--messages 6]

Runs on uvloop in this process against a real Redis and PostgreSQL (default: the
machine's at 127.0.0.1:6379 and :5432, as the tests use; a throwaway database and key
prefix are created and removed). Phases:

  populate   every chat gets `--messages` messages in one save (cold: fetch, rebuild
             probe in PostgreSQL, compare-and-set), all history written to PostgreSQL
  memory     `await store.load()` served by the bot's LRU (and a bare ChatCache.get)
  redis      `load()` with caching off: one MGET, decode
  save       `save()` of one appended message on a warm cache: one Lua compare-and-set
  postgres   `load()` of chats whose Redis keys were deleted: rebuild from `messages`
  bytes      Python heap per cached chat (tracemalloc over 10,000 loads)
  mix        the openai handler's pattern (load, save user, save assistant) over Zipf-
             popular chats (s=1.1) plus 5% new chats, default cache sizes (1000 chats,
             1 MiB per bot): hit rate per layer after as many warm-up events

Latencies are per call, one call at a time (no queueing), p50/p99 in microseconds.
Results are printed and written to bench/out/context_bench-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import itertools
import random
import secrets
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config import Settings, load_settings  # noqa: E402
from context import Changes, ContextStore, Message, open_context_store  # noqa: E402
from context.model import NAMESPACES  # noqa: E402
from ipc import keys as ipc_keys  # noqa: E402
from supervisor.registry.migrate import migrate  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
TARGETS_US = {"memory_load_p50": 5.0, "redis_load_p99": 1000.0, "save_p99": 2000.0}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def summary(samples: list[int]) -> dict[str, float]:
    s = sorted(samples)
    return {"n": len(s), "p50_us": round(pct(s, 0.5), 2), "p99_us": round(pct(s, 0.99), 2)}


async def time_each(
    pairs: list[tuple[int, int]], call: Callable[[int, int], Awaitable[Any]]
) -> list[int]:
    """Nanoseconds of each `await call(bot, chat)`, one at a time."""
    out = []
    clock = time.perf_counter_ns
    for bot, chat in pairs:
        t0 = clock()
        await call(bot, chat)
        out.append(clock() - t0)
    return out


def message_pair(i: int) -> tuple[Message, Message]:
    return (
        Message("user", f"question {i}: what do you think about the weather today?"),
        Message("assistant", f"answer {i}: it looks like a fine day, maybe some clouds later."),
    )


def settings_for(redis_url: str, database_url: str, prefix: str, **context: int) -> Settings:
    return load_settings(
        None,
        environ={},
        overrides={
            "redis": {"url": redis_url, "prefix": prefix},
            "database": {"url": database_url, "pool_max": 8},
            "context": context,
            "log": {"level": "WARNING"},
        },
    )


async def populate(store: ContextStore, chats: list[tuple[int, int]], messages: int) -> float:
    gate = asyncio.Semaphore(256)

    async def one(bot: int, chat: int) -> None:
        rows = tuple(m for i in range(messages // 2) for m in message_pair(i))
        async with gate:
            await store.save(bot, chat, Changes(append=rows))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(b, c) for b, c in chats))
    await store.wait_durable(600)
    return time.perf_counter() - t0


def zipf_picker(n: int, s: float, rng: random.Random) -> Callable[[], int]:
    weights = [1.0 / (k**s) for k in range(1, n + 1)]
    cum = list(itertools.accumulate(weights))
    total = cum[-1]
    order = list(range(n))
    rng.shuffle(order)  # popularity is not related to the chat id
    return lambda: order[bisect.bisect_left(cum, rng.random() * total)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(42)
    prefix = f"bvbench-{secrets.token_hex(4)}:"
    name = f"botvisor_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.database_url, timeout=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = urlsplit(args.database_url)._replace(path=f"/{name}").geturl()
    conn = await asyncpg.connect(db_url, timeout=10)
    await migrate(conn)
    await conn.close()
    bots = [9_000_000_000 + b for b in range(args.bots)]
    per_bot = args.chats // args.bots
    chats = [(b, 1_000_000 + c) for b in bots for c in range(per_bot)]
    big = {"cache_entries": per_bot, "cache_bytes": 64 * 1024 * 1024}
    out: dict[str, Any] = {
        "chats": len(chats),
        "bots": len(bots),
        "messages_per_chat": args.messages,
        "targets_us": TARGETS_US,
    }
    try:
        s_big = settings_for(args.redis_url, db_url, prefix, **big)
        async with open_context_store(s_big) as store:
            say(f"populate: {len(chats)} chats x {args.messages} messages ...")
            secs = await populate(store, chats, args.messages)
            out["populate"] = {"seconds": round(secs, 1), "chats_per_s": round(len(chats) / secs)}
            say(f"  {out['populate']}")

        sample = rng.sample(chats, min(args.samples, len(chats)))
        s_none = settings_for(args.redis_url, db_url, prefix, cache_entries=0)
        async with open_context_store(s_none) as store:
            await time_each(sample[:500], store.load)  # warm-up
            out["redis_load"] = summary(await time_each(sample, store.load))
            say(f"redis load: {out['redis_load']}")

        async with open_context_store(s_big) as store:
            say("warming the memory layer with every chat ...")
            for b, c in chats:
                await store.load(b, c)
            assert store.statistics().cached_chats == len(chats)
            gc.collect()
            out["memory_load"] = summary(await time_each(sample, store.load))
            cache = store.cache_for(sample[0][0])
            keys = [c for b, c in sample if b == sample[0][0]] * 50
            clock = time.perf_counter_ns
            bare = []
            for k in keys:
                t0 = clock()
                cache.get(k)
                bare.append(clock() - t0)
            out["memory_cache_get"] = summary(bare)
            say(f"memory load: {out['memory_load']}  bare get: {out['memory_cache_get']}")
            extra = Message("user", "one more message of ordinary length, say sixty chars.")
            out["save"] = summary(
                await time_each(sample, lambda b, c: store.save(b, c, Changes(append=(extra,))))
            )
            say(f"save (warm): {out['save']}")
            await store.wait_durable(600)

        lost = sample[: min(2000, len(sample))]
        client = aioredis.from_url(args.redis_url)
        try:
            for b, c in lost:
                await client.delete(
                    ipc_keys.context_version_key(prefix, b, c),
                    *(ipc_keys.context_key(prefix, b, c, ns) for ns in NAMESPACES),
                )
        finally:
            await client.aclose()
        async with open_context_store(s_none) as store:
            out["postgres_rebuild_load"] = summary(await time_each(lost, store.load))
            assert store.statistics().postgres_hits == len(lost)
        say(f"postgres rebuild load: {out['postgres_rebuild_load']}")

        tracemalloc.start()
        async with open_context_store(s_big) as store:
            gc.collect()
            before = tracemalloc.take_snapshot()
            for b, c in sample[:10_000]:
                await store.load(b, c)
            gc.collect()
            after = tracemalloc.take_snapshot()
            n = store.statistics().cached_chats
            charged = store.statistics().cached_bytes
        tracemalloc.stop()
        grown = sum(st.size_diff for st in after.compare_to(before, "filename"))
        out["bytes_per_cached_chat"] = {
            "python_heap": round(grown / n),
            "lru_charged": round(charged / n),
            "messages": args.messages + 1,
        }
        say(f"memory per cached chat: {out['bytes_per_cached_chat']}")

        s_default = settings_for(args.redis_url, db_url, prefix)  # cache defaults
        async with open_context_store(s_default) as store:
            pick = zipf_picker(len(chats), 1.1, rng)
            new_chat = itertools.count(5_000_000)
            touched: set[tuple[int, int]] = set()

            async def events(n: int) -> float:
                t0 = time.perf_counter()
                for i in range(n):
                    if rng.random() < 0.05:
                        b, c = rng.choice(bots), next(new_chat)
                    else:
                        b, c = chats[pick()]
                    touched.add((b, c))
                    await store.load(b, c)
                    user, bot_answer = message_pair(i)
                    await store.save(b, c, Changes(append=(user,)))
                    await store.save(b, c, Changes(append=(bot_answer,)))
                return time.perf_counter() - t0

            await events(args.mix_events)  # warm-up: first touches are not the steady state
            a = store.statistics()
            secs = await events(args.mix_events)
            z = store.statistics()
            loads = (z.memory_hits - a.memory_hits) + (z.memory_misses - a.memory_misses)
            misses = z.memory_misses - a.memory_misses
            out["mix"] = {
                "events": args.mix_events,
                "after_warmup_events": args.mix_events,
                "distinct_chats": len(touched),
                "events_per_s": round(args.mix_events / secs),
                "memory_hit_rate": round((z.memory_hits - a.memory_hits) / loads, 3),
                "redis_hit_rate_of_memory_misses": round(
                    (z.redis_hits - a.redis_hits) / max(1, misses), 3
                ),
                "new_chats": z.postgres_misses - a.postgres_misses,
                "postgres_rebuilds_with_history": z.postgres_hits - a.postgres_hits,
                "cached_chats": z.cached_chats,
                "lru_evictions": z.evictions - a.evictions,
            }
            say(f"mix: {out['mix']}")
    finally:
        client = aioredis.from_url(args.redis_url)
        try:
            found = [key async for key in client.scan_iter(match=f"{prefix}*", count=5000)]
            for i in range(0, len(found), 5000):
                await client.unlink(*found[i : i + 5000])
        finally:
            await client.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    out["meets_targets"] = {
        "memory_load_p50<=5us": out["memory_load"]["p50_us"] <= TARGETS_US["memory_load_p50"],
        "redis_load_p99<=1ms": out["redis_load"]["p99_us"] <= TARGETS_US["redis_load_p99"],
        "save_p99<=2ms": out["save"]["p99_us"] <= TARGETS_US["save_p99"],
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--chats", type=int, default=100_000)
    p.add_argument("--bots", type=int, default=100)
    p.add_argument("--messages", type=int, default=6, help="messages per chat at populate")
    p.add_argument("--samples", type=int, default=20_000, help="timed calls per phase")
    p.add_argument("--mix-events", type=int, default=50_000)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()
    import uvloop

    out = uvloop.run(run(args))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"context_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    say(f"written to {path}")


if __name__ == "__main__":
    main()
