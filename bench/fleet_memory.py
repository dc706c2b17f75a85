#!/usr/bin/env python3
"""Where a worker's idle memory per bot goes: the real `supervisor.worker.fleet.Fleet`, in process.

Builds what a worker builds (its Bot API pools on the same settings, uvloop, Fleet,
BotActor, BotApi, BotLimiter, ChatDispatcher) for N bots against an emulator
process, with a warm-up fleet of --warm bots first so imports and caches are
paid before measuring. Once all N + warm bots poll: RSS delta per bot,
tracemalloc delta per bot grouped by allocation site (file:line) and by file,
and live objects per bot by type (gc). Nothing of the daemon runs but the fleet
(no master, Redis, PostgreSQL), so this is the per-bot part only.
--right-sized-bodies is a what-if (monkeypatch, in this process only).

    .venv/bin/python bench/fleet_memory.py --bots 2000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    OUT_DIR,
    Children,
    EmulatorLimits,
    raise_nofile,
    say,
    start_emulator,
    stop_emulator,
)

from bots.actor.spec import BotSpec  # noqa: E402
from bots.telegram.sessions import open_session_pool  # noqa: E402
from bots.telegram.token import BotToken  # noqa: E402
from config import Settings  # noqa: E402
from emulators.telegram.control import EmulatorBot, EmulatorControl  # noqa: E402
from supervisor.worker.fleet import Fleet  # noqa: E402
from supervisor.worker.plan import Plan  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _types() -> Counter[str]:
    c: Counter[str] = Counter()
    for o in gc.get_objects():
        t = type(o)
        c[f"{t.__module__}.{t.__qualname__}"] += 1
    return c


def _site(tb: Sequence[tracemalloc.Frame]) -> str:
    """The innermost frame in project code if any (who asked), else the innermost frame."""
    frames = list(tb)
    own = [f for f in frames if f.filename.startswith(str(ROOT)) and "/.venv/" not in f.filename]
    f = own[-1] if own else frames[-1]
    name = f.filename.removeprefix(str(ROOT) + "/")
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in name:
            name = name.split(marker, 1)[1]
    return f"{name}:{f.lineno}"


async def _wait_polling(ctl: EmulatorControl, n: int, within_s: float) -> None:
    async with asyncio.timeout(within_s):
        while (await ctl.totals())["polling_now"] < n:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.1)


class _RightSizedOrjson:
    """What-if for --right-sized-bodies: orjson.dumps returns bytes with a 4 KiB buffer
    behind even a 30-byte body; a copy is exactly as long as the body."""

    JSONDecodeError = orjson.JSONDecodeError
    loads = staticmethod(orjson.loads)

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return bytes(bytearray(orjson.dumps(obj)))


async def _disabled(bot_id: int, reason: str) -> None:
    say(f"bot {bot_id} disabled: {reason}")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    children = Children()
    emu = await start_emulator(
        children, EmulatorLimits(no_limits=True), OUT_DIR / "fleet_memory-emulator.log"
    )
    me = psutil.Process()
    try:
        async with EmulatorControl(emu.base_url, timeout=60) as ctl:
            bots = await ctl.create_bots(args.warm + args.bots)
            settings = Settings.model_validate({"telegram": {"api_base": emu.base_url}})
            async with open_session_pool(settings) as pools:
                fleet = Fleet(settings, pools, _disabled)

                def specs(group: list[EmulatorBot]) -> list[BotSpec]:
                    return [BotSpec(b.id, BotToken(b.token), "echo", {}, 1) for b in group]

                await fleet.apply(Plan(start=specs(bots[: args.warm])))
                await _wait_polling(ctl, args.warm, 60)
                await asyncio.sleep(1)
                gc.collect()
                if args.tracemalloc:
                    tracemalloc.start(args.frames)
                types0 = _types()
                snap0 = tracemalloc.take_snapshot() if args.tracemalloc else None
                rss0 = me.memory_full_info()
                t = time.perf_counter()
                await fleet.apply(Plan(start=specs(bots[args.warm :])))
                await _wait_polling(ctl, args.warm + args.bots, 60 + args.bots * 0.05)
                started_s = time.perf_counter() - t
                await asyncio.sleep(args.settle)
                gc.collect()
                rss1 = me.memory_full_info()
                snap1 = tracemalloc.take_snapshot() if args.tracemalloc else None
                types1 = _types()
                n = args.bots
                out: dict[str, Any] = {
                    "bots": n,
                    "start_s": round(started_s, 2),
                    "rss_kib_per_bot": round((rss1.rss - rss0.rss) / 1024 / n, 2),
                    "uss_kib_per_bot": round((rss1.uss - rss0.uss) / 1024 / n, 2),
                }
                objs = Counter({k: v for k, v in (types1 - types0).items() if v >= n // 2})
                out["objects_per_bot"] = {k: round(v / n, 2) for k, v in objs.most_common(40)}
                if snap0 is not None and snap1 is not None:
                    filt = [tracemalloc.Filter(False, tracemalloc.__file__)]
                    diff = snap1.filter_traces(filt).compare_to(
                        snap0.filter_traces(filt), "traceback"
                    )
                    sites: Counter[str] = Counter()
                    files: Counter[str] = Counter()
                    inner: dict[str, Counter[str]] = {}
                    for st in diff:
                        if st.size_diff <= 0:
                            continue
                        site = _site(st.traceback)
                        sites[site] += st.size_diff
                        files[site.rsplit(":", 1)[0]] += st.size_diff
                        inner.setdefault(site, Counter())[_site(st.traceback[-1:])] += st.size_diff
                    total = sum(sites.values())
                    out["traced_kib_per_bot"] = round(total / 1024 / n, 2)
                    out["by_site_bytes_per_bot"] = {
                        k: round(v / n) for k, v in sites.most_common(args.top)
                    }
                    out["innermost_of_top_sites"] = {
                        site: {k: round(v / n) for k, v in inner[site].most_common(8)}
                        for site, _ in sites.most_common(args.detail)
                    }
                    out["by_file_bytes_per_bot"] = {
                        k: round(v / n) for k, v in files.most_common(args.top)
                    }
                    tracemalloc.stop()
                await fleet.stop_all()
    finally:
        await stop_emulator(children, emu)
        await children.stop_all()
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument("--bots", type=int, default=2000, help="bots measured (default 2000)")
    p.add_argument("--warm", type=int, default=50, help="bots started before measuring")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after all poll")
    p.add_argument("--frames", type=int, default=12, help="tracemalloc frames kept")
    p.add_argument("--top", type=int, default=30)
    p.add_argument(
        "--detail", type=int, default=4, help="top sites broken down by innermost (library) frame"
    )
    p.add_argument(
        "--right-sized-bodies",
        action="store_true",
        help="what-if: bots.telegram.api sends request bodies copied to their exact size "
        "(measures the cost of orjson's 4 KiB buffers held by in-flight polls)",
    )
    p.add_argument(
        "--no-tracemalloc",
        dest="tracemalloc",
        action="store_false",
        help="RSS and object counts only (tracemalloc inflates RSS)",
    )
    args = p.parse_args()
    raise_nofile()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if args.right_sized_bodies:
        import bots.telegram.api

        setattr(bots.telegram.api, "orjson", _RightSizedOrjson)  # noqa: B010 - a what-if patch
    from config.logging import configure_logging

    # as a worker does (JSON at INFO), into a file: its loggers are part of the cost
    log_file = open(OUT_DIR / "fleet_memory-fleet.log", "w")  # open until exit
    configure_logging("INFO", "json", stream=log_file)
    import uvloop

    out = uvloop.run(measure(args))
    print(
        f"{out['bots']} bots started in {out['start_s']} s; per bot: RSS "
        f"{out['rss_kib_per_bot']} KiB, USS {out['uss_kib_per_bot']} KiB"
        + (f", traced {out['traced_kib_per_bot']} KiB" if "traced_kib_per_bot" in out else "")
    )
    for site, detail in out.get("innermost_of_top_sites", {}).items():
        print(f"\n{site}: innermost frames, bytes/bot")
        for k, v in detail.items():
            print(f"  {v:>8}  {k}")
    for title, key in (
        ("allocation sites (innermost project frame), bytes/bot", "by_site_bytes_per_bot"),
        ("files, bytes/bot", "by_file_bytes_per_bot"),
        ("live objects per bot (gc-tracked types)", "objects_per_bot"),
    ):
        if key in out:
            print(f"\n{title}")
            for k, v in out[key].items():
                print(f"  {v:>8}  {k}")


if __name__ == "__main__":
    main()
