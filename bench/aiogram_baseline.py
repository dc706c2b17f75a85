#!/usr/bin/env python3
"""The baseline: aiogram 3's own multi-bot polling in ONE process, same emulator, same load.

`Dispatcher.start_polling(*bots, handle_signals=False)` with an echo handler
(`await message.reply(message.text)`, so the emulator counts the reply), every
bot sharing one `AiohttpSession(limit=N + 100)` pointed at the emulator with
`TelegramAPIServer.from_base(...)`, uvloop as the event loop (as botvisor uses),
polling_timeout 25 s (botvisor's default). The same phases and numbers as
fleet.py (see benchlib): time until all N poll, idle RSS (KiB/bot against a small
N0 run), throughput with 1,000 in flight, CPU s per 1,000 replies, p50/p99 at
half its peak. aiogram has no outgoing limiter: a 429 would fail the handler
(the message counts as lost), so the traffic is spread to stay under the limits.

    .venv/bin/python bench/aiogram_baseline.py --bots 100,1000

`--serve TOKENS_FILE --api URL` is the aiogram process itself (started by the bench).
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

# The --serve process must carry nothing but aiogram: the bench side (benchlib, the
# emulator client, psutil, asyncpg) is imported lazily, in the functions that use it.
sys.path.insert(0, str(Path(__file__).resolve().parent))

if TYPE_CHECKING:
    from benchlib import Children, EmulatorLimits, Phases

# --------------------------------------------------------------------------- the aiogram process


SELF = Path(__file__).resolve()


async def serve(api: str, tokens: list[str], polling_timeout: int) -> None:
    from aiogram import Bot, Dispatcher, Router
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import Message

    session = AiohttpSession(api=TelegramAPIServer.from_base(api), limit=len(tokens) + 100)
    bots = [Bot(token, session=session) for token in tokens]
    router = Router()

    @router.message()
    async def echo(message: Message) -> None:
        if message.text is not None:
            await message.reply(message.text)

    dp = Dispatcher()
    dp.include_router(router)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if not stopping:
            stopping.append(asyncio.ensure_future(dp.stop_polling()))

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    sys.stdout.write(orjson.dumps({"event": "aiogram.started", "bots": len(bots)}).decode() + "\n")
    sys.stdout.flush()
    await dp.start_polling(*bots, handle_signals=False, polling_timeout=polling_timeout)


def serve_main(args: argparse.Namespace) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    coro = serve(args.api, args.serve.read_text().split(), args.polling_timeout)
    if args.no_uvloop:
        asyncio.run(coro)
    else:
        import uvloop

        uvloop.run(coro)


# --------------------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class AiogramOptions:
    keep_bot_limit: bool = False
    polling_timeout: int = 25
    no_uvloop: bool = False
    py_spy: Path | None = None
    py_spy_seconds: float = 8.0

    def emulator_limits(self) -> EmulatorLimits:
        from benchlib import EmulatorLimits

        return EmulatorLimits(per_bot="30/1") if self.keep_bot_limit else EmulatorLimits()


async def run_aiogram(
    n: int, opts: AiogramOptions, ph: Phases, children: Children
) -> dict[str, Any]:
    """One complete run with N bots: its own emulator and aiogram process."""
    from benchlib import (
        OUT_DIR,
        Sut,
        idle_memory,
        measure_traffic,
        open_log,
        profile_pids,
        say,
        start_emulator,
        stop_emulator,
        wait_all_polling,
    )

    from emulators.telegram.control import EmulatorControl

    tag = f"aiogram-{n}-{secrets.token_hex(3)}"
    log_dir = OUT_DIR / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}"
    os.makedirs(log_dir, exist_ok=True)
    result: dict[str, Any] = {
        "sut": "aiogram",
        "bots": n,
        "workers": 1,
        "traffic": ph.traffic,
        "logs": str(log_dir),
    }
    say(f"aiogram: {n} bots, 1 process")
    emu = await start_emulator(children, opts.emulator_limits(), log_dir / "emulator.log")
    fd, name = tempfile.mkstemp(prefix="aiogram-tokens-")
    tokens_file = Path(name)
    try:
        async with EmulatorControl(emu.base_url, timeout=60) as ctl:
            bots = await ctl.create_bots(n)
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(b.token for b in bots) + "\n")
            argv = [
                sys.executable,
                str(SELF),
                "--serve",
                str(tokens_file),
                "--api",
                emu.base_url,
                "--polling-timeout",
                str(opts.polling_timeout),
            ]
            if opts.no_uvloop:
                argv.append("--no-uvloop")
            t0_emu = await ctl.now()
            with open_log(log_dir / "aiogram.log") as log_file:
                start = time.perf_counter()
                proc = await children.start(*argv, stdout=log_file, stderr=log_file)
            try:
                died = asyncio.create_task(proc.wait())
                waits = asyncio.create_task(wait_all_polling(ctl, t0_emu, n, ph.startup_timeout(n)))
                done, _ = await asyncio.wait({died, waits}, return_when=asyncio.FIRST_COMPLETED)
                if died in done:
                    waits.cancel()
                    await asyncio.gather(waits, return_exceptions=True)
                    raise RuntimeError(
                        f"aiogram exited with {proc.returncode} during start-up; "
                        f"see {log_dir / 'aiogram.log'}"
                    )
                died.cancel()
                waits.result()
                poll_s = time.perf_counter() - start
                result["all_polling_s"] = round(poll_s, 2)
                result["ready_s"] = None
                say(f"  all {n} polling after {poll_s:.2f} s")
                sut = Sut([proc.pid])
                result["pids"] = sut.pids
                result["idle"] = await idle_memory(sut, ph.settle_s)
                say(
                    f"  idle RSS {result['idle']['rss_mib']} MiB, "
                    f"USS {result['idle']['uss_mib']} MiB (1 process)"
                )
                if ph.traffic:
                    during = None
                    if opts.py_spy is not None:
                        during = functools.partial(
                            profile_pids,
                            children,
                            [proc.pid],
                            opts.py_spy / tag,
                            min(opts.py_spy_seconds, ph.seconds),
                        )
                    result.update(
                        await measure_traffic(
                            ctl, [b.id for b in bots], sut, emu.proc.pid, ph, during
                        )
                    )
                    if not sut.alive():
                        result["error"] = "the aiogram process died during the run"
            finally:
                result["exit"] = await children.stop(proc, grace_s=30)
    except Exception as exc:  # noqa: BLE001 - keep the other sizes running; error in the result
        result["error"] = f"{type(exc).__name__}: {exc}"
        say(f"  ERROR: {result['error']}")
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tokens_file)
        await stop_emulator(children, emu)
    return result


async def _main(args: argparse.Namespace) -> int:
    from benchlib import Children, Phases, machine, say
    from fleet import per_bot, phases_from, table

    opts = AiogramOptions(
        keep_bot_limit=args.keep_bot_limit, no_uvloop=args.no_uvloop, py_spy=args.py_spy
    )
    ph = phases_from(args)
    info = machine()
    children = Children()
    results: list[dict[str, Any]] = []
    try:
        if args.n0 > 0:
            results.append(await run_aiogram(args.n0, opts, Phases(traffic=False), children))
        for n in args.bots:
            results.append(await run_aiogram(n, opts, ph, children))
            per_bot(results)
            say(table(results))
    finally:
        await children.stop_all()
    print(table(results))
    print(orjson.dumps({"bench": "aiogram_baseline", "machine": info, "results": results}).decode())
    return 1 if any(r.get("error") for r in results) else 0


def main() -> None:
    from benchlib import parse_sizes, run_main
    from fleet import add_args

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument(
        "--bots",
        type=parse_sizes,
        default=[100, 1000, 5000],
        help="comma-separated fleet sizes (default 100,1000,5000)",
    )
    p.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop for aiogram")
    p.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="record the aiogram process with py-spy during the throughput window",
    )
    p.add_argument("--serve", type=Path, metavar="TOKENS_FILE", help=argparse.SUPPRESS)
    p.add_argument("--api", help=argparse.SUPPRESS)
    p.add_argument("--polling-timeout", type=int, default=25, help=argparse.SUPPRESS)
    add_args(p)
    args = p.parse_args()
    if args.serve is not None:
        serve_main(args)
        return
    raise SystemExit(run_main(lambda: _main(args)))


if __name__ == "__main__":
    main()
