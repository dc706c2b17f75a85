#!/usr/bin/env python3
"""The real daemon's added latency with the `openai` handler and a model answering in 1 s.

Issue 9's figure, end to end: the Bot API emulator (Telegram's flood limits on) and the
local OpenAI-compatible emulator (`latency_s` = `--model-s`, default 1 s) run in a
process each (bench/llm_emulator_child.py); the daemon (tests/daemon.py's harness: master + `--workers` workers, system
PostgreSQL in a scratch database, system Redis under a fresh prefix) serves `--bots`
bots registered with handler "openai". For each `bots.inbox` value in `--modes` the
daemon is started afresh and runs, in order:

  warm-up      one message to every bot at once (connections, the worker's first prompt)
  uncontended  `--sequential` messages one at a time (the next 0.1 s after the last's reply),
               each the first message of a new chat
  ongoing      the same in the warm-up's chats (a conversation in progress: cached context)
  loaded       `--rate` messages/s for `--seconds` s, round-robin over bots, then
               `--chats` chats per bot (one chat's next message comes `bots x chats / rate`
               s after its last: 2 s at the defaults, so per-chat order adds nothing)

Added latency = inject -> reply minus the model's time for that message (its request's
arrival -> its answer, as the emulator saw them: `--model-s` plus the emulator's own
timer lag). Per phase: p50/p99/max added ms and its two legs (inject -> the model's
request, "in"; the model's answer -> the reply, "out"), lost (unanswered `--settle` s
after the last message), answered twice, 429s, completions the model served; in the
loaded phase also the CPU % of the daemon (master + workers), of this process, of the
two emulators and of the machine. Each phase has chats of its own: their contexts start
empty.

Changed 2026-12-03 (issue 9, latency): the emulators used to run in this process, so
their HTTP handling shared one event loop with the injector and counted in "added";
they now run in processes of their own, and "added" subtracts the model's measured time
per message, not `--model-s` (the emulator's sleep overshoots by up to ~1 ms: its, not
the daemon's). Figures from before this change read higher for the same daemon and
are not comparable with later ones. Same output format.

Then (unless `--no-baseline`) the same phases against bench/llm_baseline_bot.py: a bare
bot (long poll, the same `openai` SDK call with the user's text alone, sendMessage; no
botvisor) through the same emulators, in a process of its own: the floor of the
emulators + SDK on this machine, printed as bots.inbox "baseline". botvisor's own share
of "added" is its figure minus the baseline's.

    .venv/bin/python bench/llm_latency.py                # inbox on, then off
    .venv/bin/python bench/llm_latency.py --modes true   # the default set-up only

Targets (issue 9): loaded, inbox on (the default): p99 added <= 50 ms; uncontended p50
added <= 10 ms. Writes bench/out/llm_latency-<time>.json; the last line of output is
that JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    ROOT,
    Children,
    drop_redis_prefix,
    machine,
    machine_busy,
    raise_nofile,
    read_ready,
    run_main,
    say,
    scratch_database,
    write_json,
)

sys.path.insert(0, str(ROOT))

from bots.telegram.token import BotToken  # noqa: E402
from config import Settings  # noqa: E402
from supervisor.services import open_registry  # noqa: E402
from tests.daemon import Daemon, start_daemon  # noqa: E402

TARGET_LOADED_P99_MS = 50.0
TARGET_UNCONTENDED_P50_MS = 10.0
#: chat ids: run r (0, 1, ...) and phase p get 1_000_000 * (r + 1) + 100_000 * p + k
_PHASES = ("warmup", "uncontended", "loaded")  # "ongoing" reuses the warm-up's chats


def _chat(run: int, phase: str, k: int) -> int:
    return 1_000_000 * (run + 1) + 100_000 * _PHASES.index(phase) + k


def _pct(ordered: list[float], q: float) -> float | None:
    return round(ordered[int(q * (len(ordered) - 1))], 1) if ordered else None


@dataclass
class Emulator:
    """One emulator process: its API (`url`, for the daemon) and its bench routes."""

    proc: asyncio.subprocess.Process
    url: str
    bench: str
    drain: asyncio.Task[None]


class Books:
    """Deltas of the emulators' counters over one phase, and where each message's time
    went: inject -> the model's request ("in") and the model's answer -> the reply ("out")."""

    def __init__(self, rig: Rig, tg: dict[str, Any], llm_from: int, llm_started: int) -> None:
        self.rig, self.model_s = rig, rig.args.model_s
        self.before = dict(tg["totals"])
        self.replied_before = int(tg["replied"])
        self.llm_started, self.llm_from = llm_started, llm_from
        #: text -> injected at (the emulator's clock: time.monotonic); texts are unique
        self.injected_at: dict[str, float] = {}
        self.injected = 0
        self.replied_now = self.replied_before

    @classmethod
    async def open(cls, rig: Rig) -> Books:
        tg = await rig.get(rig.tg, "books")
        llm = await rig.get(rig.llm, "requests", {"from": "0"})
        return cls(rig, tg, int(llm["count"]), int(llm["started"]))

    async def inject(self, bot_id: int, chat_id: int, text: str) -> None:
        got = await self.rig.post(
            self.rig.tg, "inject", {"bot_id": bot_id, "chat_id": chat_id, "text": text}
        )
        self.injected_at[text] = float(got["at"])
        self.injected += 1

    def replied(self) -> int:
        return self.replied_now - self.replied_before

    async def settle(self, injected: int, within_s: float) -> None:
        goal = self.replied_before + injected
        got = await self.rig.get(
            self.rig.tg, "wait", {"replied": str(goal), "timeout": f"{within_s:g}"}, within_s + 10
        )
        self.replied_now = int(got["replied"])

    async def result(self, injected: int) -> dict[str, Any]:
        tg = await self.rig.get(self.rig.tg, "books")
        llm = await self.rig.get(self.rig.llm, "requests", {"from": str(self.llm_from)})
        self.replied_now = int(tg["replied"])
        after = tg["totals"]
        asked: dict[str, tuple[float, float]] = {}  # text -> (request arrived, answered)
        for started, at, status, said in llm["requests"]:
            if status == 200:
                asked[str(said)] = (started, at)
        added, in_ms, out_ms = [], [], []
        for _bot, _chat, text, at in tg["sent"]:
            said = str(text).removeprefix("you said ").split("; earlier", 1)[0]
            injected_at = self.injected_at.get(said)
            if injected_at is None:
                continue
            if said in asked:
                started, answered = asked[said]
                in_ms.append((started - injected_at) * 1000)
                out_ms.append((at - answered) * 1000)
                added.append(in_ms[-1] + out_ms[-1])
            else:  # answered without the model (a fallback): its whole time
                added.append((at - injected_at - self.model_s) * 1000)
        added.sort()
        in_ms.sort()
        out_ms.sort()
        delta = {
            k: after[k] - self.before[k] for k in ("duplicates", "telegram_429", "get_updates")
        }
        return {
            "messages": injected,
            "replied": self.replied(),
            "lost": injected - self.replied(),
            "duplicates": delta["duplicates"],
            "telegram_429": delta["telegram_429"],
            "completions": int(llm["started"]) - self.llm_started,
            # long polls answered per message (inbox on confirms each batch at once)
            "get_updates_per_message": round(delta["get_updates"] / injected, 2)
            if injected
            else None,
            "added_p50_ms": _pct(added, 0.50),
            "added_p99_ms": _pct(added, 0.99),
            "added_max_ms": round(added[-1], 1) if added else None,
            "added_min_ms": round(added[0], 1) if added else None,
            # the two legs of `added` (their sum, per message, is it)
            "in_p50_ms": _pct(in_ms, 0.50),
            "in_p99_ms": _pct(in_ms, 0.99),
            "out_p50_ms": _pct(out_ms, 0.50),
            "out_p99_ms": _pct(out_ms, 0.99),
        }


def _cpu_each(procs: list[psutil.Process]) -> list[float]:
    out = []
    for p in procs:
        try:
            t = p.cpu_times()
            out.append(t.user + t.system)
        except psutil.Error:
            out.append(0.0)
    return out


def _cpu(procs: list[psutil.Process]) -> float:
    return sum(_cpu_each(procs))


def _daemon_procs(daemon: Daemon) -> list[psutil.Process]:
    master = psutil.Process(daemon.proc.pid)
    return [master, *master.children(recursive=True)]


@dataclass
class Rig:
    tg: Emulator
    llm: Emulator
    session: aiohttp.ClientSession
    bot_ids: list[int]
    tokens: list[str]
    args: argparse.Namespace

    async def books(self) -> Books:
        return await Books.open(self)

    async def get(
        self, emu: Emulator, name: str, query: dict[str, str] | None = None, timeout: float = 30
    ) -> Any:
        async with self.session.get(
            f"{emu.bench}/bench/{name}", params=query, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            resp.raise_for_status()
            return orjson.loads(await resp.read())

    async def post(self, emu: Emulator, name: str, body: Any) -> Any:
        async with self.session.post(
            f"{emu.bench}/bench/{name}",
            data=orjson.dumps(body),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            resp.raise_for_status()
            return orjson.loads(await resp.read())

    def procs(self) -> list[psutil.Process]:
        return [psutil.Process(e.proc.pid) for e in (self.tg, self.llm)]


async def start_emulator(children: Children, kind: str, args: argparse.Namespace) -> Emulator:
    """bench/llm_emulator_child.py in a process of its own; returns once it listens."""
    proc = await children.start(
        sys.executable,
        str(Path(__file__).resolve().parent / "llm_emulator_child.py"),
        kind,
        "--latency-s",
        f"{args.model_s:g}",
        stdout=asyncio.subprocess.PIPE,
    )
    ready, drain = await read_ready(
        children, proc, 30, f"the {kind} emulator exited before it was ready"
    )
    api = f"http://127.0.0.1:{ready['port']}" + ("/v1" if kind == "openai" else "")
    return Emulator(proc, api, f"http://127.0.0.1:{ready['bench_port']}", drain)


async def warmup(rig: Rig, run: int) -> None:
    books, bot_ids = await rig.books(), rig.bot_ids
    for b in bot_ids:
        await books.inject(b, _chat(run, "warmup", 0), f"r{run} hi {b}")
    await books.settle(len(bot_ids), 60)
    if books.replied() < len(bot_ids):
        raise RuntimeError(f"warm-up: {books.replied()} of {len(bot_ids)} answered in 60 s")


async def uncontended(
    rig: Rig, procs: list[psutil.Process], run: int, ongoing: bool = False
) -> dict[str, Any]:
    """One message at a time; the next is injected once the last is answered. Each
    message opens a new chat (its context is looked up in Redis and PostgreSQL and found
    empty), or with `ongoing` goes to the bot's warm-up chat (a conversation in
    progress: its context is in the worker's cache)."""
    bot_ids, args = rig.bot_ids, rig.args
    books = await rig.books()
    cpu0, w0 = _cpu(procs), time.perf_counter()
    for i in range(args.sequential):
        bot = bot_ids[i % len(bot_ids)]
        if ongoing:
            chat = _chat(run, "warmup", 0)
        else:
            chat = _chat(run, "uncontended", (i // len(bot_ids)) % args.chats)
        await books.inject(bot, chat, f"r{run} {'two' if ongoing else 'one'} {i}")  # unique texts
        await books.settle(i + 1, args.model_s + 30)
        if books.replied() < i + 1:
            break  # a lost message: counted, not waited for again
        await asyncio.sleep(0.1)  # the answered message's context save, off the next one's way
    cpu1, w1 = _cpu(procs), time.perf_counter()
    # ~1 message/s: mostly what the daemon spends idle
    return await books.result(args.sequential) | {
        "daemon_cpu_pct": round(100 * (cpu1 - cpu0) / (w1 - w0), 1)
    }


async def loaded(rig: Rig, procs: list[psutil.Process], run: int) -> dict[str, Any]:
    """`rate` msg/s, open loop, round-robin over bots, then chats."""
    bot_ids, args = rig.bot_ids, rig.args
    count = round(args.rate * args.seconds)
    books = await rig.books()
    me, emus = psutil.Process(), rig.procs()
    cpu0, own0, busy0, w0 = _cpu_each(procs), _cpu([me]), machine_busy(), time.perf_counter()
    emu0 = _cpu_each(emus)
    t0 = time.monotonic()
    for i in range(count):
        bot = bot_ids[i % len(bot_ids)]
        chat = _chat(run, "loaded", (i // len(bot_ids)) % args.chats)
        await books.inject(bot, chat, f"r{run} msg {i}")
        delay = t0 + (i + 1) / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the open loop's own pace
    sent_s = time.monotonic() - t0
    await books.settle(count, args.settle)
    cpu1, own1, busy1, w1 = _cpu_each(procs), _cpu([me]), machine_busy(), time.perf_counter()
    emu1 = _cpu_each(emus)
    wall = w1 - w0
    used = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    out = await books.result(count)
    out |= {
        "rate": args.rate,
        "sent_in_s": round(sent_s, 2),
        "daemon_cpu_pct": round(100 * sum(used) / wall, 1),
        # the master first, then its children (the workers)
        "daemon_cpu_pct_by_process": [round(100 * u / wall, 1) for u in used],
        "daemon_cpu_ms_per_message": round(1000 * sum(used) / count, 2),
        "bench_cpu_pct": round(100 * (own1 - own0) / wall, 1),
        # the Bot API emulator, then the model's
        "emulators_cpu_pct": [
            round(100 * (b - a) / wall, 1) for a, b in zip(emu0, emu1, strict=True)
        ],
        "machine_busy_pct": round(100 * (busy1[0] - busy0[0]) / max(1e-9, busy1[1] - busy0[1]), 1),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    return out


async def one_mode(
    rig: Rig, inbox: bool, run: int, base: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    tg, bot_ids = rig.tg, rig.bot_ids
    settings = Settings.model_validate(base | {"bots": {"inbox": inbox}})
    say(f"== bots.inbox = {str(inbox).lower()}: starting the daemon")
    t_emu = time.monotonic()  # CLOCK_MONOTONIC: the emulators' clock too
    async with start_daemon(
        settings, tg.url, tmp, ready_timeout=120, expect_warnings=("*",)
    ) as daemon:
        async with asyncio.timeout(60):
            while True:
                books = await rig.get(tg, "books", {"polling_since": f"{t_emu}"})
                if books["polling_since"] >= len(bot_ids):
                    break
                await asyncio.sleep(0.05)  # another process's books: polled
        phases = await the_phases(rig, _daemon_procs(daemon), run)
        warnings = daemon.unexpected_warnings(())
    return {
        "inbox": inbox,
        **phases,
        "daemon_warnings": len(warnings),
        "daemon_warning_events": sorted({w.split()[1] for w in warnings}),
    }


async def the_phases(rig: Rig, procs: list[psutil.Process], run: int) -> dict[str, Any]:
    """warm-up, uncontended, ongoing, loaded; `procs`: the system under test's processes."""
    args = rig.args
    await warmup(rig, run)
    say(f"  uncontended: {args.sequential} messages one at a time")
    seq = await uncontended(rig, procs, run)
    say(f"    {seq}")
    say(f"  ongoing: {args.sequential} messages one at a time, in chats with a history")
    ongoing = await uncontended(rig, procs, run, ongoing=True)
    say(f"    {ongoing}")
    say(
        f"  loaded: {args.rate:g} msg/s for {args.seconds:g} s over {len(rig.bot_ids)} bots "
        f"x {args.chats} chats"
    )
    load = await loaded(rig, procs, run)
    say(f"    {load}")
    return {"uncontended": seq, "ongoing": ongoing, "loaded": load}


async def baseline_mode(rig: Rig, children: Children, run: int) -> dict[str, Any]:
    """The same phases against bench/llm_baseline_bot.py (no botvisor): the floor."""
    say("== baseline: a bare long-poll + openai SDK + sendMessage bot, no botvisor")
    proc = await children.start(
        sys.executable,
        str(Path(__file__).resolve().parent / "llm_baseline_bot.py"),
        "--api",
        rig.tg.url,
        "--llm",
        rig.llm.url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write("".join(f"{t}\n" for t in rig.tokens).encode())
        await proc.stdin.drain()
        proc.stdin.close()
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()
        if not line.startswith(b'{"event":"baseline.ready"'):
            raise RuntimeError(f"the baseline bot did not start: {line!r}")
        phases = await the_phases(rig, [psutil.Process(proc.pid)], run)
    finally:
        await children.stop(proc, grace_s=10)
    return {"inbox": "baseline", **phases, "daemon_warnings": 0, "daemon_warning_events": []}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    info = machine()
    prefix = f"botvisor-bench-{secrets.token_hex(4)}:"
    tmp = Path(tempfile.mkdtemp(prefix="bvllm-"))
    modes = [m.strip().lower() in ("true", "on", "1") for m in args.modes.split(",") if m]
    runs: list[dict[str, Any]] = []
    started = time.time()
    children = Children()
    drains: list[asyncio.Task[None]] = []
    try:
        async with (
            scratch_database(args.pg_admin_dsn) as dsn,
            aiohttp.ClientSession() as session,
        ):
            tg = await start_emulator(children, "telegram", args)
            drains.append(tg.drain)
            llm = await start_emulator(children, "openai", args)
            drains.append(llm.drain)
            base: dict[str, Any] = {
                "database": {"url": dsn},
                "redis": {"url": args.redis_url, "prefix": prefix},
                "state": {"dir": str(tmp / "state")},
                "workers": {"count": args.workers},
                "openai": {"base_url": llm.url, "api_key": "sk-bench", "model": "emu-1"},
            }
            rig = Rig(tg, llm, session, [], [], args)
            bots = await rig.post(tg, "bots", {"count": args.bots})
            async with open_registry(Settings.model_validate(base)) as registry:
                await registry.add_many(
                    [(BotToken(b["token"]), f"llm{b['id']}") for b in bots], handler="openai"
                )
            rig.bot_ids = [b["id"] for b in bots]
            rig.tokens = [b["token"] for b in bots]
            for run, inbox in enumerate(modes):
                runs.append(await one_mode(rig, inbox, run, base, tmp))
            if args.baseline:
                runs.append(await baseline_mode(rig, children, len(modes)))
    finally:
        await children.stop_all()
        for drain in drains:
            drain.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        await drop_redis_prefix(args.redis_url, prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    default = next((r for r in runs if r["inbox"] is True), None)
    met = None
    if default is not None:
        p99 = default["loaded"]["added_p99_ms"]
        p50 = default["uncontended"]["added_p50_ms"]
        p50_on = default["ongoing"]["added_p50_ms"]
        met = {
            "loaded_p99_added_ms<=50": p99 is not None and p99 <= TARGET_LOADED_P99_MS,
            "uncontended_p50_added_ms<=10": p50 is not None and p50 <= TARGET_UNCONTENDED_P50_MS,
            "ongoing_p50_added_ms<=10": p50_on is not None and p50_on <= TARGET_UNCONTENDED_P50_MS,
            "nothing_lost_or_twice": all(
                r[ph]["lost"] == 0 and r[ph]["duplicates"] == 0
                for r in runs
                if r["inbox"] != "baseline"
                for ph in ("uncontended", "ongoing", "loaded")
            ),
        }
    return {
        "bench": "llm_latency",
        "machine": info | {"loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
        "bots": args.bots,
        "chats_per_bot": args.chats,
        "workers": args.workers,
        "model_s": args.model_s,
        "runs": runs,
        "met": met,
    }


def table(result: dict[str, Any]) -> str:
    head = (
        f"{'bots.inbox':>10}  {'phase':>11}  {'msgs':>5}  {'p50 added':>9}  {'p99 added':>9}  "
        f"{'max':>7}  {'in p50':>6}  {'out p50':>7}  {'lost':>4}  {'twice':>5}  {'429':>4}"
    )
    lines = [head, "-" * len(head)]
    for r in result["runs"]:
        for phase in ("uncontended", "ongoing", "loaded"):
            p = r[phase]
            lines.append(
                f"{str(r['inbox']).lower():>10}  {phase:>11}  {p['messages']:>5}  "
                f"{p['added_p50_ms']!s:>9}  {p['added_p99_ms']!s:>9}  {p['added_max_ms']!s:>7}  "
                f"{p['in_p50_ms']!s:>6}  {p['out_p50_ms']!s:>7}  {p['lost']:>4}  {p['duplicates']:>5}  {p['telegram_429']:>4}"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--modes", default="true,false", help="bots.inbox values, in order")
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then the same phases against bench/llm_baseline_bot.py (no botvisor)",
    )
    p.add_argument("--bots", type=int, default=20)
    p.add_argument("--chats", type=int, default=5, help="chats per bot")
    p.add_argument("--rate", type=float, default=50.0, help="messages/s in the loaded phase")
    p.add_argument("--seconds", type=float, default=30.0, help="loaded phase, seconds")
    p.add_argument("--sequential", type=int, default=50, help="uncontended messages")
    p.add_argument("--model-s", type=float, default=1.0, help="the model's time per answer")
    p.add_argument("--settle", type=float, default=60.0, help="wait for late replies, s")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()

    async def go() -> int:
        result = await measure(args)
        path = write_json("llm_latency", result)
        say(
            f"\n{args.bots} bots x {args.chats} chats, model {args.model_s:g} s, "
            f"{args.workers} workers; load {result['machine']['loadavg_start']} -> "
            f"{result['machine']['loadavg_end']}"
        )
        say(table(result))
        say(f"targets (inbox on): {result['met']}; {path}")
        print(orjson.dumps(result).decode(), flush=True)
        met = result["met"]
        return 0 if met is not None and all(met.values()) else 1

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
