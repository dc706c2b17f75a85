"""`python -m emulators.telegram --host 127.0.0.1 --port 8081 [--no-limits]`.

Prints one JSON line `{"event": "emulator.ready", "base_url": ...}` on stdout once
the socket is bound (with `--port 0` it carries the chosen port).
"""

from __future__ import annotations

import argparse
import sys

import orjson

from emulators.telegram.limits import Limit
from emulators.telegram.server import run_emulator


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m emulators.telegram", description="Telegram Bot API emulator."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    p.add_argument(
        "--per-bot",
        type=Limit.parse,
        default=Limit(30, 1.0),
        metavar="N/SECONDS",
        help="sendMessage per bot (default 30/1)",
    )
    p.add_argument(
        "--per-chat",
        type=Limit.parse,
        default=Limit(1, 1.0),
        metavar="N/SECONDS",
        help="sendMessage per private chat (default 1/1)",
    )
    p.add_argument(
        "--per-group",
        type=Limit.parse,
        default=Limit(20, 60.0),
        metavar="N/SECONDS",
        help="sendMessage per group (default 20/60)",
    )
    p.add_argument(
        "--no-limits", action="store_true", help="disable all flood limits (ceiling measurements)"
    )
    p.add_argument(
        "--sent-log-limit",
        type=int,
        default=1_000,
        help="messages kept per bot for /control/bots/{id}/sent (default 1000; 0 keeps none)",
    )
    return p


def _ready(host: str, port: int) -> None:
    line = {
        "event": "emulator.ready",
        "host": host,
        "port": port,
        "base_url": f"http://{host}:{port}",
    }
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_emulator(
        args.host,
        args.port,
        per_bot=args.per_bot,
        per_chat=args.per_chat,
        per_group=args.per_group,
        rate_limits=not args.no_limits,
        sent_log_limit=args.sent_log_limit,
        on_ready=_ready,
    )


if __name__ == "__main__":
    main()
