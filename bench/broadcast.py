"""A broadcast to a big audience of one bot, under Telegram's limits, while users write to it.

One daemon (1 worker) against its own emulator process that enforces Telegram's limits
(30/s per bot, 1/s per chat). The bot has `--chats` chats (default 100,000) in the
emulator and in the `chats` table. Phases, in one invocation:

  baseline   `--baseline-s` of user messages to the bot at `--reply-rate` per second
             (each from a new chat), no broadcast: the emulator's inject -> reply p50/p99
  broadcast  a broadcast started over the admin API; after `--warmup-s`, for `--seconds`:
             the bot's sends per second as % of its limit (30/s; also of the limiter's
             own ceiling 30 per 1.025 s), the broadcast's own share, the emulator's 429s,
             and the reply p50/p99 of the same user traffic; then the broadcast is
             cancelled (100,000 chats at 30/s take 56 minutes; the window measures the
             steady state) unless `--seconds 0` lets it finish.

Targets (issue 14): >= 95% of the bot's limit, 0 x 429, replies p99 <= 1 s during it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import (  # noqa: E402
    OUT_DIR,
    Children,
    EmulatorLimits,
    NotifySocket,
    free_port,
    machine,
    open_log,
    run_main,
    say,
    scratch_database,
    start_emulator,
    write_json,
)
from bots.telegram.token import BotToken  # noqa: E402
from config import Settings  # noqa: E402
from emulators.telegram.control import EmulatorControl  # noqa: E402
from supervisor.services import open_registry  # noqa: E402

ADMIN = "bench-admin-" + secrets.token_urlsafe(32)
#: user chats of the reply traffic, far from the audience's ids
USER_CHAT_BASE = 50_000_000


async def user_traffic(
    ctl: EmulatorControl, bot_id: int, rate: float, seconds: float, first: int
) -> int:
    """One message per 1/rate s, each from a new chat (never rate-limited per chat)."""
    n = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        await ctl.inject([{"bot_id": bot_id, "chat_id": first + i, "text": f"q{i}"}])
    return n


async def wait_replied(ctl: EmulatorControl, n: int, within_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        totals = (await ctl.stats(per_bot=False))["totals"]
        if totals["replied"] >= n or time.monotonic() > deadline:
            return dict(totals)
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    children = Children()
    log_dir = OUT_DIR / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-broadcast"
    os.makedirs(log_dir, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="bvbench-"))
    prefix = f"botvisor-bench-{secrets.token_hex(4)}:"
    result: dict[str, Any] = {"chats": args.chats, "reply_rate": args.reply_rate}
    limits = EmulatorLimits(per_bot="30/1")  # Telegram's, enforced by the emulator
    emu = await start_emulator(children, limits, log_dir / "emulator.log")
    try:
        async with (
            scratch_database(args.pg_admin_dsn) as dsn,
            EmulatorControl(emu.base_url, timeout=60) as ctl,
            aiohttp.ClientSession() as http,
        ):
            (bot,) = await ctl.create_bots(1)
            await ctl.create_chats(bot.id, args.chats)
            settings = Settings.model_validate(
                {
                    "database": {"url": dsn},
                    "redis": {"url": args.redis_url, "prefix": prefix},
                    "state": {"dir": str(state_dir)},
                }
            )
            async with open_registry(settings) as registry:
                await registry.add(BotToken(bot.token), username=bot.username)
                await registry.pool.execute(
                    "INSERT INTO chats (bot_id, chat_id) "
                    "SELECT $1, g FROM generate_series(1, $2) g",
                    bot.id,
                    args.chats,
                )
            port = free_port()
            notify = NotifySocket(state_dir / "notify.sock")
            env = {k: v for k, v in os.environ.items() if not k.startswith("BOTVISOR_")}
            env.update(
                {
                    "BOTVISOR_REDIS__URL": args.redis_url,
                    "BOTVISOR_REDIS__PREFIX": prefix,
                    "BOTVISOR_DATABASE__URL": dsn,
                    "BOTVISOR_TELEGRAM__API_BASE": emu.base_url,
                    "BOTVISOR_HTTP__PORT": str(port),
                    "BOTVISOR_WORKERS__COUNT": "1",
                    "BOTVISOR_STATE__DIR": str(state_dir),
                    "BOTVISOR_SECURITY__ADMIN_KEY": ADMIN,
                    "BOTVISOR_LOG__FORMAT": "json",
                    "NOTIFY_SOCKET": str(notify.path),
                }
            )
            with open_log(log_dir / "daemon.log") as log_file:
                daemon = await children.start(
                    sys.executable, "-m", "supervisor.cli.main", "run",
                    env=env, stdout=log_file, stderr=log_file,
                )  # fmt: skip
            await notify.wait_for("READY=1", 60)
            base = f"http://127.0.0.1:{port}/v1/bots/{bot.id}/broadcasts"
            auth = {"Authorization": f"Bearer {ADMIN}"}

            # -- baseline: replies with no broadcast
            await ctl.reset_stats()
            n = await user_traffic(ctl, bot.id, args.reply_rate, args.baseline_s, USER_CHAT_BASE)
            totals = await wait_replied(ctl, n)
            result["baseline"] = {k: totals[k] for k in ("replied", "p50_ms", "p99_ms")}
            say(f"baseline: {result['baseline']}")

            # -- the broadcast
            async with http.post(base, json={"text": "Big news"}, headers=auth) as r:
                created = await r.json()
                assert r.status == 201, created
            one = f"{base}/{created['id']}"
            t_start = time.monotonic()
            await asyncio.sleep(args.warmup_s)
            await ctl.reset_stats()
            before = await progress(http, one, auth)
            t0 = time.monotonic()
            seconds = args.seconds or 1e9
            traffic = asyncio.create_task(
                user_traffic(ctl, bot.id, args.reply_rate, seconds, USER_CHAT_BASE + 10**6)
            )
            samples = []
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(1.0)
                p = await progress(http, one, auth)
                samples.append(p["rate"])
                if p["state"] not in ("pending", "running"):
                    break
            traffic.cancel()
            await asyncio.gather(traffic, return_exceptions=True)
            window = time.monotonic() - t0
            after = await progress(http, one, auth)
            stats = await ctl.stats(per_bot=True)
            bot_stats = stats["bots"][str(bot.id)]
            totals = stats["totals"]
            replies = totals["replied"]
            sent_by_broadcast = after["sent"] - before["sent"]
            all_sends = bot_stats["sent"]
            result["broadcast"] = {
                "window_s": round(window, 1),
                "bot_sends_per_s": round(all_sends / window, 2),
                "broadcast_sends_per_s": round(sent_by_broadcast / window, 2),
                "replies_in_window": replies,
                "pct_of_30_per_s": round(100 * all_sends / window / 30, 1),
                "pct_of_limiter_ceiling": round(100 * all_sends / window / (30 / 1.025), 1),
                "broadcast_pct_of_30_per_s": round(100 * sent_by_broadcast / window / 30, 1),
                "telegram_429": bot_stats["telegram_429"],
                "max_in_1s": bot_stats["max_in_1s"],
                "reply_p50_ms": totals["p50_ms"],
                "reply_p99_ms": totals["p99_ms"],
                "lost_replies": totals["lost"],
                "reported_rate_median": statistics.median(samples) if samples else None,
                "started_after_s": round(t0 - t_start, 1),
            }
            say(f"broadcast: {result['broadcast']}")
            async with http.delete(one, headers=auth) as r:
                result["final"] = await r.json()
            await children.stop(daemon)
    finally:
        await children.stop_all()
    result["logs"] = str(log_dir)
    return result


async def progress(http: aiohttp.ClientSession, url: str, auth: dict[str, str]) -> Any:
    async with http.get(url, headers=auth) as r:
        return await r.json()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chats", type=int, default=100_000, help="audience size (default 100,000)")
    p.add_argument("--seconds", type=float, default=120.0, help="measured window (0: to the end)")
    p.add_argument("--warmup-s", type=float, default=5.0, help="before the window starts")
    p.add_argument("--baseline-s", type=float, default=20.0, help="replies without a broadcast")
    p.add_argument("--reply-rate", type=float, default=1.0, help="user messages per second")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()

    async def go() -> int:
        result = await run(args)
        out = {"bench": "broadcast", "machine": machine(), "args": vars(args), **result}
        path = write_json("broadcast", out)
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        say(f"wrote {path}")
        b = result["broadcast"]
        ok = b["pct_of_30_per_s"] >= 95 and b["telegram_429"] == 0 and b["reply_p99_ms"] <= 1000
        return 0 if ok else 1

    raise SystemExit(run_main(go))


if __name__ == "__main__":
    main()
