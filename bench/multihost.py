#!/usr/bin/env python3
"""Several hosts on one PostgreSQL and one Redis: shard leases, failover and fencing.

Real daemons (tests/daemon.py's harness), each with its own host id, HTTP port and state
dir, one worker each, the Bot API emulator in this process, continuous traffic
throughout (every message to a chat of its own). Phases, measured on the emulator:

  steady     3 hosts, N bots: 409s while balanced (target 0), lost, answered twice
  kill       SIGKILL one host's whole process tree: seconds until each of its bots
             polled on another host (target <= ttl + 2), lost (target 0)
  pause      SIGSTOP one host for 2 x ttl, then SIGCONT: answered twice (target 0),
             409s per bot that moved (target <= 1), lost
  join       a new host joins: shards moved to it, 409s (target 0)
  leave      SIGTERM that host: its shards back on the others, lost (target 0)
  renewals   lease transactions/s and statements/s per host, from PostgreSQL's own
             counters (pg_stat_user_tables on lease_hosts: one upsert per round)

    .venv/bin/python bench/multihost.py --bots 3000

Writes bench/out/multihost-<time>.json; the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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

import asyncpg  # noqa: E402

from bots.telegram.token import BotToken  # noqa: E402
from config import Settings  # noqa: E402
from emulators.telegram.server import RunningEmulator, open_emulator  # noqa: E402
from supervisor.services import open_registry  # noqa: E402
from tests.daemon import Daemon, start_daemon  # noqa: E402

SHARDS = 64
#: an answer this soon after the SIGSTOP was on the wire before it (sent, not recorded)
ON_THE_WIRE_S = 0.1


class Cluster:
    """The hosts, each a daemon in its own exit stack so it can stop on its own."""

    def __init__(self, args: argparse.Namespace, base: dict[str, Any], tmp: Path, emu: Any):
        self.args, self.base, self.tmp, self.emu = args, base, tmp, emu
        self.hosts: dict[str, Daemon] = {}
        self._stacks: dict[str, contextlib.AsyncExitStack] = {}

    def settings(self, host: str) -> Settings:
        return Settings.model_validate(
            {**self.base, "host": {"id": host}, "state": {"dir": str(self.tmp / host)}}
        )

    async def start(self, host: str) -> Daemon:
        stack = contextlib.AsyncExitStack()
        daemon = await stack.enter_async_context(
            start_daemon(
                self.settings(host),
                self.emu.base_url,
                self.tmp,
                ready_timeout=120,
                expect_warnings=("*",),  # killed and paused hosts warn; measured here
            )
        )
        self.hosts[host], self._stacks[host] = daemon, stack
        return daemon

    async def stop(self, host: str) -> None:
        self.hosts.pop(host, None)
        stack = self._stacks.pop(host, None)
        if stack is not None:
            await stack.aclose()

    async def close(self) -> None:
        for host in list(self._stacks):
            await self.stop(host)

    async def split(self) -> dict[str, list[int]]:
        """Shards per live host, as any host's /v1/status shows them."""
        for daemon in self.hosts.values():
            with contextlib.suppress(OSError, TimeoutError, AssertionError):
                status = await daemon.status()
                return {h["host"]: h["shards"] for h in status["hosts"] or [] if h["alive"]}
        return {}

    async def wait_balanced(self, hosts: list[str], timeout: float = 120) -> dict[str, list[int]]:
        """Every shard held, by exactly `hosts`, each within one of an even split, all ready."""
        share = SHARDS // len(hosts)
        async with asyncio.timeout(timeout):
            while True:
                held = await self.split()
                counts = [len(held.get(h, [])) for h in hosts]
                if (
                    sorted(held) == sorted(hosts)
                    and sum(counts) == SHARDS
                    and all(share <= c <= share + 1 for c in counts)
                    and await self._all_ready(hosts)
                ):
                    return held
                await asyncio.sleep(0.2)

    async def _all_ready(self, hosts: list[str]) -> bool:
        for h in hosts:
            code, _ = await self.hosts[h].get("/readyz")
            if code != 200:
                return False
        return True


async def wait_taken(cluster: Cluster, gone: str, shards: set[int]) -> None:
    """Until hosts other than `gone` hold every one of `shards` (other processes: polled)."""
    while True:
        held = await cluster.split()
        if shards <= {s for h, v in held.items() if h != gone for s in v}:
            return
        await asyncio.sleep(0.1)


async def tree_pids(daemon: Daemon) -> list[int]:
    status = await daemon.status()
    return [w["pid"] for w in status["workers"] if w["pid"]] + [daemon.proc.pid]


@contextlib.asynccontextmanager
async def traffic(emu: RunningEmulator, bot_ids: list[int], rate: float) -> AsyncIterator[None]:
    """`rate` messages a second to random bots, each to a chat of its own, until exit."""
    chats = iter(range(1_000_000, 1_000_000_000))

    async def feed() -> None:
        tick = 0.05
        while True:
            n = max(1, round(rate * tick))
            emu.state.inject(
                [
                    {"bot_id": random.choice(bot_ids), "chat_id": next(chats), "text": "m"}
                    for _ in range(n)
                ]
            )
            await asyncio.sleep(tick)

    task = asyncio.create_task(feed(), name="bench:traffic")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def totals(emu: RunningEmulator) -> dict[str, int]:
    t = emu.state.stats(False)["totals"]
    return {k: int(t[k]) for k in ("injected", "replied", "duplicates", "conflicts", "lost")}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in ("duplicates", "conflicts")}


async def settle(emu: RunningEmulator, timeout: float = 60) -> dict[str, int]:
    """Totals once every injected message is answered (or the timeout passes)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await emu.state.wait_until(lambda: emu.state.stats(False)["totals"]["lost"] <= 0)
    return totals(emu)


async def wait_polled_after(emu: RunningEmulator, bots: list[int], t0: float) -> float:
    def moved() -> bool:
        return all((emu.state.bots[b].last_poll_at or 0) > t0 for b in bots)

    async with asyncio.timeout(120):
        await emu.state.wait_until(moved)
    return max(emu.state.bots[b].last_poll_at or 0 for b in bots) - t0


def answered_twice(
    emu: RunningEmulator, bots: list[int], since: float
) -> tuple[int, list[tuple[float, float]]]:
    """Messages of `bots` answered twice: (first answer before `since`, after `since`).

    Every message goes to a chat of its own, so (chat, reply_to) names one message. A
    first answer before the pause (or within ON_THE_WIRE_S of it: sent before it) then a
    second is the new holder answering what the paused host answered but had not yet
    recorded (the window a SIGKILL has too); a first answer later than that means the
    new holder answered it first and the woken host answered again: fencing's target."""
    before = 0
    after: list[tuple[float, float]] = []  # (first, second) answer, seconds after `since`
    for bot_id in bots:
        first: dict[tuple[int, int | None], float] = {}
        for chat_id, _, reply_to, at in emu.state.bots[bot_id].sent_log:
            key = (chat_id, reply_to)
            if key not in first:
                first[key] = at
            elif first[key] < since + ON_THE_WIRE_S:
                before += 1
            else:
                after.append((round(first[key] - since, 3), round(at - since, 3)))
    return before, after


async def renewal_rate(dsn: str, hosts: int, seconds: float) -> dict[str, float]:
    """Lease rounds per second per host from PostgreSQL's counters: each round upserts its
    host's lease_hosts row once (plus one UPDATE of shard_leases and one SELECT)."""

    async def sample(conn: asyncpg.Connection) -> tuple[int, int]:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT (SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables"
            "  WHERE relname = 'lease_hosts') AS rounds,"
            " (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())"
            "  AS commits"
        )
        assert row is not None
        return int(row["rounds"]), int(row["commits"])

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        r0, c0 = await sample(conn)
        await asyncio.sleep(seconds)
        r1, c1 = await sample(conn)
    finally:
        await conn.close(timeout=5)
    rounds = (r1 - r0) / seconds / hosts
    return {
        "lease_transactions_per_s_per_host": round(rounds, 2),
        # BEGIN, upsert, UPDATE shard_leases, SELECT hosts, COMMIT
        "lease_statements_per_s_per_host": round(rounds * 5, 2),
        "all_transactions_per_s_per_host": round((c1 - c0) / seconds / hosts, 2),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915 - one story
    raise_nofile()
    prefix = f"botvisor-bench-{secrets.token_hex(4)}:"
    tmp = Path(tempfile.mkdtemp(prefix="bvmulti-"))
    ttl = args.ttl
    result: dict[str, Any] = {"bench": "multihost", "bots": args.bots, "machine": machine()}
    try:
        async with (
            scratch_database(args.pg_admin_dsn) as dsn,
            open_emulator(rate_limits=False) as emu,
        ):
            base = {
                "database": {"url": dsn},
                "redis": {"url": args.redis_url, "prefix": prefix},
                "workers": {"count": 1, "shards": SHARDS},
                "leases": {"ttl_s": ttl, "renew_s": args.renew, "margin_s": args.margin},
                "security": {"encryption_key": base64.b64encode(os.urandom(32)).decode()},
                "log": {"level": "INFO"},
            }
            result["leases"] = base["leases"]
            bots = emu.state.create_bots(args.bots)
            ids = [b.id for b in bots]
            cluster = Cluster(args, base, tmp, emu)
            async with open_registry(cluster.settings("setup")) as registry:
                await registry.add_many([(BotToken(b.token), f"b{b.id}") for b in bots])
            try:
                for h in ("host-a", "host-b", "host-c"):
                    await cluster.start(h)
                held = await cluster.wait_balanced(["host-a", "host-b", "host-c"])
                say(f"3 hosts balanced: {[len(v) for v in held.values()]} shards")
                async with traffic(emu, ids, args.rate):
                    # -- steady state --------------------------------------------------
                    t = totals(emu)
                    await asyncio.sleep(args.steady)
                    result["steady"] = {"seconds": args.steady, **delta(t, totals(emu))}
                    result["renewals"] = await renewal_rate(dsn, 3, args.steady)
                    say(f"steady: {result['steady']}; renewals {result['renewals']}")

                    # -- SIGKILL one host ----------------------------------------------
                    victims = [b for b in ids if b % SHARDS in set(held["host-c"])]
                    t = totals(emu)
                    for pid in await tree_pids(cluster.hosts["host-c"]):
                        os.kill(pid, signal.SIGKILL)
                    t0 = emu.state.clock()
                    moving = asyncio.create_task(wait_polled_after(emu, victims, t0))
                    lost_shards = set(held["host-c"])
                    await wait_taken(cluster, "host-c", lost_shards)
                    taken_s = emu.state.clock() - t0
                    moved_s = await moving
                    await cluster.stop("host-c")
                    held = await cluster.wait_balanced(["host-a", "host-b"])
                    result["kill"] = {
                        "bots_moved": len(victims),
                        "leases_taken_s": round(taken_s, 2),
                        "all_polling_elsewhere_s": round(moved_s, 2),
                        **delta(t, totals(emu)),
                    }
                    say(f"kill: {result['kill']}")

                    # -- SIGSTOP one host for 2 x ttl ----------------------------------
                    paused = [b for b in ids if b % SHARDS in set(held["host-b"])]
                    t = totals(emu)
                    pids = await tree_pids(cluster.hosts["host-b"])
                    for pid in pids:
                        os.kill(pid, signal.SIGSTOP)
                    t0 = emu.state.clock()
                    taking = asyncio.create_task(wait_polled_after(emu, paused, t0))
                    await asyncio.sleep(2 * ttl)
                    took_s = await taking
                    for pid in pids:
                        os.kill(pid, signal.SIGCONT)
                    held = await cluster.wait_balanced(["host-a", "host-b"])
                    d = delta(t, totals(emu))
                    at_takeover, after_wake = answered_twice(emu, paused, t0)
                    result["pause"] = {
                        "paused_s": 2 * ttl,
                        "bots_moved": len(paused),
                        "taken_over_after_s": round(took_s, 2),
                        "answered_twice": len(after_wake),
                        "answered_twice_times_s": after_wake[:20],
                        "woke_at_s": 2 * ttl,
                        "answered_twice_at_takeover": at_takeover,
                        "duplicates_seen_by_emulator": d["duplicates"],
                        "conflicts": d["conflicts"],
                        "conflicts_per_moved_bot": round(d["conflicts"] / max(1, len(paused)), 3),
                    }
                    say(f"pause: {result['pause']}")

                    # -- a host joins, then leaves with SIGTERM ------------------------
                    t = totals(emu)
                    await cluster.start("host-d")
                    held = await cluster.wait_balanced(["host-a", "host-b", "host-d"])
                    result["join"] = {"shards_to_new_host": len(held["host-d"])}
                    result["join"].update(delta(t, totals(emu)))
                    t = totals(emu)
                    await cluster.stop("host-d")  # SIGTERM: drain, release
                    await cluster.wait_balanced(["host-a", "host-b"])
                    result["leave"] = delta(t, totals(emu))
                    say(f"join: {result['join']}; leave: {result['leave']}")
                final = await settle(emu)
                result["lost"] = final["lost"]
                result["injected"] = final["injected"]
                result["answered_twice_total"] = final["duplicates"]
            finally:
                await cluster.close()
    finally:
        await drop_redis_prefix(args.redis_url, prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    result["met"] = {
        "steady_0_conflicts": result["steady"]["conflicts"] == 0,
        "kill_within_ttl_plus_2": result["kill"]["all_polling_elsewhere_s"] <= ttl + 2,
        "pause_0_answered_twice": result["pause"]["answered_twice"] == 0,
        "pause_at_most_one_409_per_moved_bot": result["pause"]["conflicts"]
        <= result["pause"]["bots_moved"],
        "join_0_conflicts": result["join"]["conflicts"] == 0,
        "0_lost": result["lost"] == 0,
    }
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bots", type=int, default=3000, help="bots (default 3000)")
    p.add_argument("--rate", type=float, default=200, help="messages per second (default 200)")
    p.add_argument("--steady", type=float, default=10, help="steady-state seconds (default 10)")
    p.add_argument("--ttl", type=float, default=5, help="leases.ttl_s (default 5)")
    p.add_argument("--renew", type=float, default=1, help="leases.renew_s (default 1)")
    p.add_argument("--margin", type=float, default=2, help="leases.margin_s (default 2)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()

    async def go() -> int:
        import orjson

        result = await measure(args)
        path = write_json("multihost", result)
        say(f"met: {result['met']}; {path}")
        print(orjson.dumps(result).decode(), flush=True)
        return 0 if all(result["met"].values()) else 1

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
