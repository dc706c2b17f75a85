"""Before a command runs: its log level, the one line about state and private servers,
and the refusal of read-only commands that would otherwise create an empty registry."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from config import Settings
from config.loading import state_dir_origin
from supervisor.exitcodes import ExitCode

#: Commands that only read: they never create a registry (nor start a private server
#: that holds none).
READ_ONLY = frozenset(
    {
        ("bots", "list"),
        ("bots", "show"),
        ("owners", "list"),
        ("owners", "show"),
        ("audit", None),
        ("status", None),
        ("upgrade", None),
    }
)
#: Long-running commands keep the configured log level; one-shot ones log warnings only
#: unless log.level is set explicitly.
DAEMONS = frozenset({"run", "demo"})


def _key(args: argparse.Namespace) -> tuple[str, str | None]:
    sub = getattr(args, f"{args.command}_command", None)
    return args.command, sub


def log_level(args: argparse.Namespace, settings: Settings) -> str:
    if args.debug:
        return "DEBUG"
    explicit = "BOTVISOR_LOG__LEVEL" in os.environ or settings.log.level != "INFO"
    if args.command in DAEMONS or explicit:
        return settings.log.level
    return "WARNING"


def _private(settings: Settings) -> list[str]:
    return [
        name
        for name, url in (("PostgreSQL", settings.database.url), ("Redis", settings.redis.url))
        if url is None
    ]


def announce(args: argparse.Namespace, settings: Settings) -> None:
    """One short stderr line: where state lives (and why) when private servers are used."""
    if args.command in ("emulator", "demo", "doctor", "handlers") or not _private(settings):
        return
    where = Path(settings.state.dir).absolute()
    servers = " and ".join(_private(settings))
    print(
        f"botvisor: state in {where} ({state_dir_origin(args.config)}); "
        f"embedded {servers} there (no {'/'.join(_urls(settings))} set)",
        file=sys.stderr,
        flush=True,
    )


def _urls(settings: Settings) -> list[str]:
    out = []
    if settings.database.url is None:
        out.append("database.url")
    if settings.redis.url is None:
        out.append("redis.url")
    return out


def has_private_postgres(state_dir: Path) -> bool:
    """A cluster exists: in state_dir, or where it goes when its account can't reach it."""
    from supervisor.embedded.base import digest

    state_dir = state_dir.resolve()  # as open_embedded names it
    roots = (state_dir / "postgres", Path("/var/tmp") / f"botvisor-pg-{digest(state_dir)}")
    return any((root / "data").is_dir() for root in roots)


def refuse_empty(args: argparse.Namespace, settings: Settings) -> int | None:
    """An exit status if a read-only command would find nothing (and create it), else None."""
    if _key(args) not in READ_ONLY:
        return None
    where = Path(settings.state.dir).absolute()
    if args.command in ("status", "upgrade"):  # they talk to a daemon over its Redis
        if settings.redis.url is None and not (where / "redis").is_dir():
            print(
                f"botvisor: no daemon has run with state in {where} "
                f"({state_dir_origin(args.config)}); start one with `botvisor run`, or "
                "point --config / BOTVISOR_STATE__DIR / redis.url at the running one",
                file=sys.stderr,
            )
            return ExitCode.NO_REGISTRY
        return None
    if settings.database.url is None and not has_private_postgres(where):
        print(
            f"botvisor: no registry in {where} ({state_dir_origin(args.config)}); "
            "register a bot with `botvisor bots add` first, or point --config, "
            "BOTVISOR_STATE__DIR or database.url at an existing one",
            file=sys.stderr,
        )
        return ExitCode.NO_REGISTRY
    return None
