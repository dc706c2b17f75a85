"""`botvisor`'s argument parser: its options, then each command group's arguments (daemon,
bots, owners, broadcast). Every command has --help."""

from __future__ import annotations

import argparse
from pathlib import Path

from supervisor.cli import broadcast
from supervisor.cli.bots_parser import add_bots_commands, add_chats_command
from supervisor.cli.daemon_parser import add_daemon_commands, add_shards_command
from supervisor.cli.owners_parser import add_owners_commands

EPILOG = """\
configuration: TOML file (--config, else ./botvisor.toml if present) overlaid by
environment variables BOTVISOR_SECTION__KEY (e.g. BOTVISOR_TELEGRAM__API_BASE).
With no redis.url / database.url, private servers are started in state.dir.
"""


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """`argv`: the command line, for help texts built only when they are asked for."""
    p = argparse.ArgumentParser(
        prog="botvisor",
        description="Run fleets of Telegram bots: a master, sharded workers, one actor per bot.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML config file (default ./botvisor.toml)")
    p.add_argument(
        "--debug",
        action="store_true",
        help="print the full traceback of a failure instead of one line",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # in the order `botvisor --help` lists them
    add_daemon_commands(sub, argv)
    add_bots_commands(sub)
    add_owners_commands(sub)
    add_shards_command(sub)
    add_chats_command(sub)
    broadcast.add_parser(sub)
    return p
