#!/usr/bin/env python3
"""Rolling code upgrade of N bots on W workers under continuous traffic.

The real daemon (tests/daemon.py's harness) with the Bot API emulator in this process
(rate limits on, so 429s count). Two windows of the same traffic, one message a bot
every `--interval` s, each in a chat of its own (no per-chat limiter waits):

  baseline   `--baseline` seconds without an upgrade
  upgrade    POST /v1/upgrade (admin key), traffic until GET /v1/upgrade says done

For each window, after the traffic stops and every reply has arrived (or 180 s passed):
injected, lost, answered twice (duplicates), 409 conflicts, 429s, reply latency p50/p99
(the emulator's clock). Plus the upgrade's own duration (the master's started/finished)
and whether every worker pid changed.

    .venv/bin/python bench/upgrade.py --bots 5000 --workers 2

Targets: lost == 0, duplicates == 0, conflicts == 0 during the upgrade. Writes
bench/out/upgrade-<time>.json; the last line of output is one JSON object.
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
    raise_nofile,
    run_main,
    say,
    scratch_database,
    write_json,
)

sys.path.insert(0, str(ROOT))

from bots.telegram.token import BotToken  # noqa: E402
from config import Settings  # noqa: E402
from emulators.telegram.server import RunningEmulator, open_emulator  # noqa: E402
from supervisor.services import open_registry  # noqa: E402
from tests.daemon import Daemon, start_daemon  # noqa: E402

ADMIN_KEY = "bench-admin-" + secrets.token_urlsafe(32)
_COUNTED = ("injected", "replied", "duplicates", "conflicts", "telegram_429")


class Traffic:
    """One message per bot every `interval` s, spread evenly, each in a new chat."""

    def __init__(self, emulator: RunningEmulator, bot_ids: list[int], interval: float) -> None:
        self.emulator = emulator
        self.bot_ids = bot_ids
        self.interval = interval
        self.chat = 0

    async def run(self) -> None:
        slices = 20  # injections per interval
        step = max(1, len(self.bot_ids) // slices)
        while True:
            for k in range(0, len(self.bot_ids), step):
                self.chat += 1
                self.emulator.state.inject(
                    [
                        {"bot_id": b, "chat_id": self.chat, "text": "x"}
                        for b in self.bot_ids[k : k + step]
                    ]
                )
                await asyncio.sleep(self.interval / slices)  # the traffic's own pace


async def window(
    emulator: RunningEmulator, traffic: Traffic, body: Any, settle_s: float = 180.0
) -> dict[str, Any]:
    """Counters of one traffic window: `body` runs while the traffic flows."""
    state = emulator.state
    before = {k: state.stats(False)["totals"][k] for k in _COUNTED}
    lat_from = len(state.latencies_ms)
    t0 = time.monotonic()
    task = asyncio.create_task(traffic.run(), name="bench:traffic")
    try:
        extra = await body()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    seconds = time.monotonic() - t0
    injected = state.stats(False)["totals"]["injected"] - before["injected"]
    try:
        async with asyncio.timeout(settle_s):
            await state.wait_until(
                lambda: state.stats(False)["totals"]["replied"] - before["replied"] >= injected
            )
    except TimeoutError:
        pass
    after = {k: state.stats(False)["totals"][k] for k in _COUNTED}
    lat = sorted(state.latencies_ms[lat_from:])

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else 0.0

    replied = after["replied"] - before["replied"]
    return {
        "seconds": round(seconds, 2),
        "injected": injected,
        "lost": injected - replied,
        "duplicates": after["duplicates"] - before["duplicates"],
        "conflicts": after["conflicts"] - before["conflicts"],
        "telegram_429": after["telegram_429"] - before["telegram_429"],
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1], 1) if lat else 0.0,
        **extra,
    }


async def admin(daemon: Daemon, method: str) -> tuple[int, Any]:
    """One call of /v1/upgrade; a loaded machine may take a while to answer."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    timeout = aiohttp.ClientTimeout(total=120)
    url = daemon.http + "/v1/upgrade"
    async with daemon.session.request(method, url, headers=headers, timeout=timeout) as r:
        return r.status, await r.json()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    prefix = f"botvisor-bench-{secrets.token_hex(4)}:"
    tmp = Path(tempfile.mkdtemp(prefix="bvupgrade-"))
    try:
        async with (
            scratch_database(args.pg_admin_dsn) as dsn,
            open_emulator() as emulator,
        ):
            settings = Settings.model_validate(
                {
                    "database": {"url": dsn},
                    "redis": {"url": args.redis_url, "prefix": prefix},
                    "state": {"dir": str(tmp / "state")},
                    "workers": {"count": args.workers, "boot_timeout_s": 120},
                    "security": {"admin_key": ADMIN_KEY},
                    "bots": {"inbox_claim_idle_s": args.claim_idle},
                    "log": {"level": "WARNING"},
                }
            )
            bots = emulator.state.create_bots(args.bots)
            async with open_registry(settings) as registry:
                await registry.add_many([(BotToken(b.token), f"b{b.id}") for b in bots])
            traffic = Traffic(emulator, [b.id for b in bots], args.interval)
            # warnings are counted in the result, not fatal as in tests
            async with start_daemon(
                settings, emulator.base_url, tmp, ready_timeout=300, expect_warnings=("*",)
            ) as daemon:
                pids_before = [w["pid"] for w in (await daemon.status())["workers"]]
                say(f"{args.bots} bots ready on {args.workers} workers")

                async def idle() -> dict[str, Any]:
                    await asyncio.sleep(args.baseline)
                    return {}

                baseline = await window(emulator, traffic, idle)
                say(f"baseline: {baseline}")

                async def upgrade() -> dict[str, Any]:
                    status, started = await admin(daemon, "POST")
                    assert status == 202, started
                    while True:
                        await asyncio.sleep(0.2)  # another process's progress
                        _, progress = await admin(daemon, "GET")
                        if progress["phase"] in ("done", "failed"):
                            return {"upgrade": progress}

                during = await window(emulator, traffic, upgrade)
                say(f"upgrade: {during}")
                after: dict[str, Any] = {"workers": []}
                for _ in range(5):  # this process's loop also serves 5,000 long polls
                    try:
                        after = await daemon.wait_status(lambda s: s["ready"], timeout=120)
                        break
                    except TimeoutError:
                        continue
                pids_after = [w["pid"] for w in after["workers"]]
                warnings = daemon.unexpected_warnings(())
    finally:
        await drop_redis_prefix(args.redis_url, prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    progress = during.pop("upgrade")
    took = None
    if progress["started"] and progress["finished"]:
        from datetime import datetime

        took = (
            datetime.fromisoformat(progress["finished"])
            - datetime.fromisoformat(progress["started"])
        ).total_seconds()
    return {
        "bench": "upgrade",
        "bots": args.bots,
        "workers": args.workers,
        "messages_per_bot_per_s": round(1 / args.interval, 3),
        "inbox_claim_idle_s": args.claim_idle,
        "machine": machine(),
        "upgrade_phase": progress["phase"],
        "upgrade_error": progress["error"],
        "upgrade_s": took,  # whole seconds: the API's timestamps
        "workers_replaced": progress["workers_replaced"],
        "pids_all_changed": bool(pids_after) and not set(pids_before) & set(pids_after),
        "bots_running_after": sum(w["bots_running"] for w in after["workers"]),
        "daemon_warnings": len(warnings),
        "daemon_warning_events": sorted({w.split()[1] for w in warnings}),
        "baseline": baseline,
        "during_upgrade": during,
        "met": progress["phase"] == "done"
        and during["lost"] == 0
        and during["duplicates"] == 0
        and during["conflicts"] == 0,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bots", type=int, default=5000, help="bots (default 5000)")
    p.add_argument("--workers", type=int, default=2, help="workers (default 2)")
    p.add_argument(
        "--interval", type=float, default=10.0, help="seconds between two messages of a bot"
    )
    p.add_argument("--baseline", type=float, default=20.0, help="baseline window, seconds")
    p.add_argument(
        "--claim-idle",
        type=float,
        default=30.0,
        help="bots.inbox_claim_idle_s (default 30, the default's): an update waiting longer "
        "than this in a worker's queue is claimed again and may be answered twice",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()

    async def go() -> int:
        import orjson

        result = await measure(args)
        path = write_json("upgrade", result)
        d, b = result["during_upgrade"], result["baseline"]
        say(
            f"{args.bots} bots, {args.workers} workers upgraded in {result['upgrade_s']} s "
            f"({result['upgrade_phase']}): during it {d['injected']} messages, lost "
            f"{d['lost']}, twice {d['duplicates']}, 409 {d['conflicts']}, 429 "
            f"{d['telegram_429']}, p50/p99 {d['p50_ms']}/{d['p99_ms']} ms (baseline "
            f"{b['p50_ms']}/{b['p99_ms']} ms, lost {b['lost']}); {path}"
        )
        print(orjson.dumps(result).decode(), flush=True)
        return 0 if result["met"] else 1

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
