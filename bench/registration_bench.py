#!/usr/bin/env python3
"""Registration latency: POST /v1/bots -> the new bot's first getUpdates, N times.

The real daemon (`python -m supervisor.cli.main run`, W workers, tests/daemon.py's harness)
against a fresh PostgreSQL database and Redis prefix, with the Bot API emulator in this
process (so its monotonic clock is ours: `first_poll_at - t0` needs no clock sync).
Registrations are sequential: each POST is sent once the previous bot polls, so the
fleet grows 0 -> N while we measure. Per registration:

  answer    POST sent -> 201 received (getMe check, INSERT, reconcile hint)
  polling   POST sent -> the emulator receives the bot's first getUpdates
            (hint -> worker reconcile -> getMe handshake -> long poll)

    .venv/bin/python bench/registration_bench.py --count 200 --workers 2

Target: polling p99 <= 100 ms. Writes bench/out/registration-<time>.json; the last line
of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

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

from config import Settings  # noqa: E402
from emulators.telegram.server import open_emulator  # noqa: E402
from emulators.telegram.state import EmulatorState  # noqa: E402
from tests.daemon import start_daemon  # noqa: E402

TARGET_P99_MS = 100.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_pct(ms, 0.50), 2),
        "p90_ms": round(_pct(ms, 0.90), 2),
        "p99_ms": round(_pct(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
    }


async def _first_poll(state: EmulatorState, bot_id: int) -> float:
    """The emulator-clock time of the bot's first getUpdates (woken by the emulator)."""
    bot = state.bots[bot_id]
    await state.wait_until(lambda: bot.first_poll_at is not None)
    assert bot.first_poll_at is not None
    return bot.first_poll_at


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    admin_key = secrets.token_urlsafe(24)
    prefix = f"botvisor-bench-{secrets.token_hex(4)}:"
    state_dir = Path(tempfile.mkdtemp(prefix="bvreg-"))
    answer_ms: list[float] = []
    polling_ms: list[float] = []
    try:
        async with (
            scratch_database(args.pg_admin_dsn) as dsn,
            open_emulator(rate_limits=False) as emulator,
        ):
            settings = Settings.model_validate(
                {
                    "database": {"url": dsn},
                    "redis": {"url": args.redis_url, "prefix": prefix},
                    "state": {"dir": str(state_dir / "state")},
                    "workers": {"count": args.workers},
                    "security": {"admin_key": admin_key},
                }
            )
            headers = {"Authorization": f"Bearer {admin_key}"}
            timeout = aiohttp.ClientTimeout(total=10)
            async with start_daemon(settings, emulator.base_url, state_dir) as daemon:
                say(f"daemon ready ({args.workers} workers); {args.count} registrations")
                for i in range(args.count):
                    bot = emulator.state.create_bots(1)[0]
                    t0 = time.monotonic()  # the emulator's clock too
                    async with daemon.session.post(
                        daemon.http + "/v1/bots",
                        json={"token": bot.token},
                        headers=headers,
                        timeout=timeout,
                    ) as resp:
                        if resp.status != 201:
                            raise RuntimeError(f"POST {i}: {resp.status} {await resp.text()}")
                    answer_ms.append((time.monotonic() - t0) * 1000)
                    async with asyncio.timeout(args.within_s):
                        first_poll = await _first_poll(emulator.state, bot.id)
                    polling_ms.append((first_poll - t0) * 1000)
                    if (i + 1) % 50 == 0:
                        say(f"  {i + 1}: polling p50 {_pct(polling_ms, 0.5):.1f} ms so far")
                # heartbeats lag by up to a second: wait for them to show the whole fleet
                status = await daemon.wait_status(
                    lambda s: sum(w["bots_running"] for w in s["workers"]) >= args.count
                )
    finally:
        await drop_redis_prefix(args.redis_url, prefix)
        shutil.rmtree(state_dir, ignore_errors=True)
    running = sum(w["bots_running"] for w in status["workers"])
    return {
        "bench": "registration",
        "count": args.count,
        "workers": args.workers,
        "machine": machine(),
        "answer": _summary(answer_ms),
        "polling": _summary(polling_ms),
        "target_p99_ms": TARGET_P99_MS,
        "met": _pct(polling_ms, 0.99) <= TARGET_P99_MS,
        "bots_running_at_end": running,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=200, help="registrations (default 200)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--within-s", type=float, default=10.0, help="give up on one bot after this")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()

    async def go() -> int:
        result = await measure(args)
        path = write_json("registration", result)
        a, s = result["answer"], result["polling"]
        say(
            f"201 answer: p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms; first getUpdates: "
            f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms "
            f"(target p99 <= {TARGET_P99_MS:g} ms: {'met' if result['met'] else 'MISSED'}); "
            f"{path}"
        )
        import orjson

        print(orjson.dumps(result).decode(), flush=True)
        return 0 if result["met"] else 1

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
