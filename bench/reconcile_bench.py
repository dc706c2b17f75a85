#!/usr/bin/env python3
"""One reconcile pass at N registered bots: the old full scan vs reconcile by change.

In process, against a scratch PostgreSQL database (migrated) holding N active bots, all
in this worker's shards (the worst case: one worker). A fleet stand-in (no Telegram)
records plans, so only the reconcile itself is measured. Passes:

  scan          the old pass: Registry.desired() (every row, every token decrypted on
                the loop) + plan_changes against N running bots (steady state, no change)
  start         Reconciler's first pass (full, every bot started: every token decrypted
                in batches that yield to the loop; without the worker's one-time
                gc.collect()+gc.freeze() after its first pass)
  idle          a by-change pass with nothing changed
  changed       a by-change pass after 10 settings changes and 10 new tokens
  hint          a targeted pass for 10 hinted bot ids
  safety        the periodic full pass with every bot running and unchanged

For each: wall time, the loop's worst lag (a 1 ms probe task), tokens decrypted, rows
read. Run:

    .venv/bin/python bench/reconcile_bench.py --bots 10000 --repeat 5

Prints a table and writes bench/out/reconcile-<time>.json (the last line is JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import ROOT, machine, run_main, say, scratch_database, write_json  # noqa: E402

sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from bots.telegram.token import BotToken  # noqa: E402
from config import load_settings  # noqa: E402
from supervisor.registry.bots import Registry  # noqa: E402
from supervisor.registry.changes import ChangeFeed  # noqa: E402
from supervisor.registry.migrate import migrate  # noqa: E402
from supervisor.registry.tokenbox import TokenBox  # noqa: E402
from supervisor.worker.plan import plan_changes  # noqa: E402
from supervisor.worker.reconcile import Reconciler  # noqa: E402
from tests.reconcile_helpers import FakeHost  # noqa: E402

SHARDS = 64


class LagProbe:
    """Worst delay of a task that wants to run every millisecond."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - t - 0.001)

    async def __aenter__(self) -> LagProbe:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.005)
        self.worst = 0.0
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        await asyncio.sleep(0.003)  # let the probe record a stall that ended the pass
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def measure(fn: Callable[[], Awaitable[tuple[int, int]]]) -> dict[str, Any]:
    async with LagProbe() as probe:
        t0 = time.perf_counter()
        decrypted, rows = await fn()
        wall = time.perf_counter() - t0
    return {
        "ms": round(wall * 1000, 1),
        "lag_ms": round(probe.worst * 1000, 1),
        "decrypted": decrypted,
        "rows": rows,
    }


async def one_run(dsn: str, n: int, settings: Any) -> dict[str, dict[str, Any]]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, timeout=10)
    try:
        async with pool.acquire(timeout=10) as conn:
            await migrate(conn)
            await conn.execute("TRUNCATE bots, bots_removed", timeout=60)
        box = TokenBox(b"k" * 32)
        registry = Registry(pool, box, 60.0)
        await registry.add_many([(BotToken(f"{i}:{'A' * 35}"), "") for i in range(1, n + 1)])
        shards = list(range(SHARDS))
        decrypted: list[int] = []

        def decrypt(bot_id: int, blob: bytes, key_id: str) -> BotToken:
            decrypted.append(bot_id)
            return registry.decrypt(bot_id, blob, key_id)

        # "ready": leave out the worker's one-time gc.collect()+freeze after its first pass
        host = FakeHost(settings, shards, state="ready")
        feed = ChangeFeed(pool, 60.0)
        rec = Reconciler(host, feed, decrypt)  # type: ignore[arg-type]
        out: dict[str, dict[str, Any]] = {}

        async def run_pass() -> tuple[int, int]:
            before, rows = len(decrypted), rec.stats.rows_read
            await rec.pass_once()
            return len(decrypted) - before, rec.stats.rows_read - rows

        out["start"] = await measure(run_pass)
        running = host.fleet.running_specs()
        assert len(running) == n, len(running)

        async def scan() -> tuple[int, int]:
            desired = await registry.desired(shards, SHARDS)
            plan_changes(desired, running)
            return len(desired), len(desired)

        out["scan"] = await measure(scan)
        out["idle"] = await measure(run_pass)
        for i in range(1, 11):
            await registry.update(i, settings={"bench": i})
        await pool.execute(
            "UPDATE bots SET token_encrypted = token_encrypted, revision = revision + 1"
            " WHERE id BETWEEN 11 AND 20"
        )
        for i in range(11, 21):  # a new token: a fresh ciphertext
            key_id, blob = box.seal(BotToken(f"{i}:{'B' * 35}"))
            await pool.execute(
                "UPDATE bots SET key_id = $2, token_encrypted = $3 WHERE id = $1", i, key_id, blob
            )
        out["changed"] = await measure(run_pass)
        for i in range(21, 31):
            await registry.update(i, settings={"hint": i})
        rec.hint(range(21, 31))
        out["hint"] = await measure(run_pass)
        rec._next_full = 0.0
        out["safety"] = await measure(run_pass)
        return out
    finally:
        await pool.close()


async def main(args: argparse.Namespace) -> int:
    gc.set_threshold(50_000, 20, 100)  # what a worker sets (supervisor/worker/process.py)
    config = Path(args.out_dir) / "reconcile-bench.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("")
    settings = load_settings(config, environ={}, overrides={"workers": {"shards": SHARDS}})
    runs: list[dict[str, dict[str, Any]]] = []
    async with scratch_database(args.pg_admin_dsn) as dsn:
        for r in range(args.repeat):
            runs.append(await one_run(dsn, args.bots, settings))
            say(f"run {r + 1}/{args.repeat}: {runs[-1]}")
    summary = {
        name: {
            key: statistics.median(run[name][key] for run in runs)
            for key in ("ms", "lag_ms", "decrypted", "rows")
        }
        for name in runs[0]
    }
    say(
        f"{'pass':<8} {'ms':>8} {'lag ms':>8} {'decrypted':>10} {'rows':>7}  (median of {len(runs)})"
    )
    for name, m in summary.items():
        say(f"{name:<8} {m['ms']:>8} {m['lag_ms']:>8} {m['decrypted']:>10} {m['rows']:>7}")
    result = {"bots": args.bots, "machine": machine(), "median": summary, "runs": runs}
    path = write_json("reconcile", result)
    say(f"wrote {path}")
    print(__import__("json").dumps({"bots": args.bots, "median": summary}))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bots", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "out"))
    a = p.parse_args()
    raise SystemExit(run_main(lambda: main(a)))
