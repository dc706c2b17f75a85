#!/usr/bin/env python3
"""What quota metering costs per update: a handler wrapped in `MeteredHandler` (the
worker's `UsageMeter`: owner, limits and today's total looked up in memory, the count
queued) against the same handler bare, in the same invocation, alternating rounds.

In process, against a scratch PostgreSQL database (migrated; OWNERS owners with BOTS bots
between them, every owner with a messages quota it never reaches) and Redis (a prefix of
its own, dropped after). The caches are warmed first, as in a worker that has run for a
minute; then every round handles UPDATES updates round-robin over the bots, and the
metered rounds end with the one flush that writes their counts. Run:

    .venv/bin/python bench/usage_meter_bench.py --updates 200000 --rounds 5

Prints ns/update for both and the flush time; writes bench/out/usage_meter-<time>.json
(the last line is JSON).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    ROOT,
    drop_redis_prefix,
    machine,
    run_main,
    say,
    scratch_database,
    write_json,
)

sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402

from bots.handlers.base import BotContext  # noqa: E402
from bots.handlers.metering import MeteredHandler  # noqa: E402
from bots.telegram.update import Incoming  # noqa: E402
from config import load_settings  # noqa: E402
from supervisor.registry.migrate import migrate  # noqa: E402
from supervisor.services import create_pool  # noqa: E402
from supervisor.worker.usage_meter import UsageMeter  # noqa: E402


class Noop:
    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        return None


async def _round(handler: Any, contexts: list[BotContext], update: Incoming, n: int) -> float:
    k = len(contexts)
    t0 = time.perf_counter()
    for i in range(n):
        await handler.handle(update, contexts[i % k])
    return (time.perf_counter() - t0) / n * 1e9


async def main(args: argparse.Namespace) -> int:
    config = Path(args.out_dir) / "usage-meter-bench.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("")
    prefix = f"botvisor-bench-{secrets.token_hex(4)}:"
    async with scratch_database(args.pg_admin_dsn) as dsn:
        settings = load_settings(
            config,
            environ={},
            overrides={
                "database": {"url": dsn},
                "redis": {"url": args.redis_url, "prefix": prefix},
            },
        )
        pool = await create_pool(settings)
        redis = aioredis.from_url(args.redis_url, socket_timeout=5)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                await conn.executemany(
                    "INSERT INTO owners (id, name) VALUES ($1, $2)",
                    [(o, f"owner{o}") for o in range(1, args.owners + 1)],
                )
                await conn.executemany(
                    "INSERT INTO owner_quotas (owner_id, messages_per_day) VALUES ($1, $2)",
                    [(o, 10**12) for o in range(1, args.owners + 1)],
                )
                await conn.executemany(
                    "INSERT INTO bots (id, owner_id, key_id, token_encrypted) VALUES ($1, $2, 'k', '')",
                    [(b, 1 + b % args.owners) for b in range(1, args.bots + 1)],
                )
            meter = UsageMeter(redis, pool, lambda: settings)
            contexts = [BotContext(b, f"bot{b}", None, {}) for b in range(1, args.bots + 1)]  # type: ignore[arg-type]
            update = Incoming({"update_id": 1, "message": {"chat": {"id": 1}, "text": "hi"}})
            bare, metered = Noop(), MeteredHandler(Noop(), meter)
            await _round(metered, contexts, update, args.bots)  # warm: owners, limits
            await meter.flush()
            plain: list[float] = []
            with_meter: list[float] = []
            flushes: list[float] = []
            for r in range(args.rounds):
                plain.append(await _round(bare, contexts, update, args.updates))
                with_meter.append(await _round(metered, contexts, update, args.updates))
                t0 = time.perf_counter()
                await meter.flush()
                flushes.append((time.perf_counter() - t0) * 1e3)
                say(f"round {r + 1}: bare {plain[-1]:.0f} ns, metered {with_meter[-1]:.0f} ns")
        finally:
            await pool.close()
            await redis.aclose()
            await drop_redis_prefix(args.redis_url, prefix)
    result = {
        "command": " ".join(sys.argv),
        "machine": machine(),
        "bots": args.bots,
        "owners": args.owners,
        "updates_per_round": args.updates,
        "bare_ns_median": statistics.median(plain),
        "metered_ns_median": statistics.median(with_meter),
        "added_ns_median": statistics.median(m - p for m, p in zip(with_meter, plain, strict=True)),
        "flush_ms_median": statistics.median(flushes),
    }
    say(
        f"bare {result['bare_ns_median']:.0f} ns/update, metered "
        f"{result['metered_ns_median']:.0f} ns/update (+{result['added_ns_median']:.0f} ns); "
        f"one flush of {args.owners} owners' counts: {result['flush_ms_median']:.2f} ms"
    )
    write_json("usage_meter", result)
    print(__import__("json").dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bots", type=int, default=1000)
    p.add_argument("--owners", type=int, default=100)
    p.add_argument("--updates", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "out"))
    raise SystemExit(run_main(lambda: main(p.parse_args())))
