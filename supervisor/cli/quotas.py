"""`botvisor owners show|set-quota` and `botvisor audit`: quotas, usage and the audit log.

Run in a CLI process against the registry (and Redis for today's live usage, when it
answers); the daemon may be running meanwhile. Changes are recorded in the audit log
with source `cli`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from redis.exceptions import RedisError

from config import Settings
from ipc.redis_client import redis_client
from ipc.usage import UsageCounters
from supervisor.exitcodes import ExitCode
from supervisor.registry.audit import open_audit, parse_since
from supervisor.registry.bots import Registry
from supervisor.registry.owners import ADMIN
from supervisor.registry.quotas import (
    BOTS,
    LLM_TOKENS_PER_DAY,
    MESSAGES_PER_DAY,
    OwnerReport,
    QuotaOverride,
    QuotaStore,
    owner_report,
)
from supervisor.services import open_registry, open_services

#: `--flag` -> the quota it sets
_FLAGS = {
    "bots": BOTS,
    "messages_per_day": MESSAGES_PER_DAY,
    "llm_tokens_per_day": LLM_TOKENS_PER_DAY,
}


def _out(text: str) -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(f"botvisor: {text}", file=sys.stderr, flush=True)


def quota_value(text: str) -> int | None:
    """argparse type of `--bots` etc.: an integer ≥ 0 (0 = unlimited) or `default`."""
    if text == "default":
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 15):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a whole number (0 = unlimited) or `default`"
        )
    return int(text)


async def _owner_id(registry: Registry, ref: str) -> int | None:
    """An owner named by name, or by id."""
    by_name = await registry.owner_id_by_name(ref)
    if by_name is not None or not (ref.isascii() and ref.isdigit() and len(ref) <= 18):
        return by_name
    return int(ref) if await registry.owner(int(ref)) is not None else None


def _show(report: OwnerReport, as_json: bool) -> None:
    data: dict[str, Any] = report.public()
    if as_json:
        _out(orjson.dumps(data).decode())
        return
    quota, override, usage = data["quota"], data["override"], data["usage"]

    def line(label: str, used: int, key: str) -> str:
        limit = quota[key]
        shown = "unlimited" if limit == 0 else str(limit)
        source = "default" if override[key] is None else "set for this owner"
        return f"  {label:<20} {used:>12} of {shown:<12} ({source})"

    _out(f"owner {report.name} (id {report.id}), created {data['created_at']}")
    _out(f"usage on {usage['day']} (UTC):")
    _out(line("bots", usage["bots"], BOTS))
    _out(line("messages per day", usage["messages"], MESSAGES_PER_DAY))
    _out(line("LLM tokens per day", usage["llm_tokens"], LLM_TOKENS_PER_DAY))


async def quota_command(settings: Settings, args: argparse.Namespace) -> int:
    """`owners show OWNER` and `owners set-quota OWNER --bots N …`."""
    async with (
        open_services(settings, redis=True) as live,
        open_registry(live) as registry,  # an older registry gets the quota tables
        open_audit(registry.pool, live.database.timeout_s) as audit,
    ):
        owner_id = await _owner_id(registry, args.owner)
        if owner_id is None:
            _err(f"owner {args.owner!r}: no such owner (see `botvisor owners list`)")
            return ExitCode.FAILURE
        if args.owners_command == "set-quota":
            given = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not ...}
            if not given:
                _err("nothing to set: give --bots, --messages-per-day and/or --llm-tokens-per-day")
                return ExitCode.FAILURE
            store = QuotaStore(registry.pool, live.database.timeout_s)
            current = await store.override(owner_id)
            merged = {k: getattr(current, k) for k in _FLAGS} | given
            await store.set_override(owner_id, QuotaOverride(**merged))
            audit.record(
                ADMIN,
                "owner.set_quota",
                f"owner:{owner_id}",
                source="cli",
                owner_id=owner_id,
                detail=merged,
            )
        assert live.redis.url is not None
        redis = redis_client(live.redis.url, live.redis.timeout_s, 2)
        try:
            counters = UsageCounters(redis, live.redis.prefix, live.redis.timeout_s)
            report = await owner_report(registry, live, counters, owner_id)
        except (RedisError, OSError, TimeoutError) as exc:
            # PostgreSQL's copy is at most quotas.sync_interval_s behind: better than nothing
            _err(f"Redis did not answer ({type(exc).__name__}); usage as last copied to PostgreSQL")
            report = await owner_report(registry, live, None, owner_id)
        finally:
            await redis.aclose()
        assert report is not None
        _show(report, args.json)
        return 0


async def audit_command(settings: Settings, args: argparse.Namespace) -> int:
    """`botvisor audit [--since …] [--action …] [--target …] [--limit N] [--json]`."""
    try:
        since = None if args.since is None else parse_since(args.since)
    except ValueError as exc:
        _err(f"--{exc}")
        return ExitCode.FAILURE
    if not 1 <= args.limit <= 100_000:
        _err("--limit: give a number from 1 to 100000")
        return ExitCode.FAILURE
    async with (
        open_services(settings, redis=False) as live,
        open_registry(live) as registry,
        open_audit(registry.pool, live.database.timeout_s) as audit,
    ):
        rows = await audit.query(
            since=since, action=args.action, target=args.target, limit=args.limit
        )
    rows.reverse()  # oldest first, like a log
    if args.json:
        for row in rows:
            _out(orjson.dumps(row.public()).decode())
        return 0
    for r in rows:
        detail = orjson.dumps(dict(r.detail)).decode() if r.detail else ""
        when = r.at.isoformat(timespec="seconds")
        _out(
            f"{when}  {r.actor:<12} {r.source:<22} {r.action:<18} {r.target:<16} {r.outcome} {detail}"
        )
    return 0
