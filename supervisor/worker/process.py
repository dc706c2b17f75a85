"""A worker process: hosts the bot actors of its shards. Started by the master as
`python -m supervisor.worker.process --index W`; the first stdin line carries settings and the
shards to own, later lines new settings (reload) and new shard assignments (rebalance).

This module is the entry point only: it reads the first line, sets up logging and the
collector, and runs the `Worker` (supervisor/worker/worker.py) on uvloop.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import structlog
from pydantic import ValidationError

from config import ConfigError, Settings
from ipc import pipe
from ipc.messages import BadMessage
from supervisor.exitcodes import ExitCode
from supervisor.worker.worker import Worker

log = structlog.get_logger(__name__)


def read_first_line(fd: int) -> bytes:
    """The master's first pipe line, read without a buffer: the master may already have
    written the next (a lease renewal, a new assignment), and a buffered read would take
    part of it away from the loop's reader."""
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return bytes(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="botvisor-worker", description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int)
    which.add_argument(
        "--standby",
        action="store_true",
        help="imports done, wait for the first pipe line, which carries the index",
    )
    parser.add_argument(
        "--heartbeat-fd", type=int, default=None, help="pipe to the master for heartbeats"
    )
    args = parser.parse_args(argv)
    from config.logging import configure_logging

    line = read_first_line(sys.stdin.fileno())
    if not line and args.standby:
        raise SystemExit(0)  # a standby whose master left (or drained) before needing it
    try:
        first = pipe.decode(line)
        if not isinstance(first, pipe.Configure) or first.shards is None or first.epoch is None:
            raise BadMessage("the first pipe message must carry settings, shards and epoch")
        if args.standby:
            if first.index is None:
                raise BadMessage("a standby's first pipe message must carry its index")
            args.index = first.index
        settings = Settings.model_validate(first.settings)
        shards, epoch, leases = list(first.shards), first.epoch, first.leases
        warm = list(first.warm)
    except (BadMessage, ValidationError) as exc:
        print(f"worker: bad settings from master: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None
    configure_logging(settings.log.level, settings.log.format, background=True)
    structlog.contextvars.bind_contextvars(worker=args.index)
    # Thousands of long-lived actor objects make every full collection walk them all:
    # measured 300-750 ms pauses, 14-21 per 45 s at 5,000 bots. Collect young objects
    # rarely and freeze the long-lived ones once the fleet is up (supervisor/worker/reconcile.py).
    gc.set_threshold(50_000, 20, 100)
    try:
        import uvloop

        worker = Worker(
            settings, args.index, shards, epoch, args.heartbeat_fd, warm, first.sparse_figures
        )
        if leases is not None:
            worker.use_leases(leases)
        uvloop.run(worker.run())
    except ConfigError as exc:
        log.error("worker.config_error", error=str(exc))
        raise SystemExit(ExitCode.CONFIG) from None
    raise SystemExit(worker.exit_status)


if __name__ == "__main__":
    main()
