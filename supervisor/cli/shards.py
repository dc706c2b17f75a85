"""`botvisor shards show` and `botvisor shards migrate --to N`: the cluster's shard leases.

The shard count is fixed per cluster (stored in PostgreSQL by the first master); a host
configured with another count refuses to start. `migrate` changes the stored count, only
while no host runs, so no bot ever has two pollers across the change.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import orjson

from config import Settings
from supervisor.exitcodes import ExitCode
from supervisor.registry import leases
from supervisor.services import open_registry, open_services


async def shards_command(settings: Settings, args: argparse.Namespace) -> int:
    async with open_services(settings, redis=False) as live, open_registry(live) as registry:
        timeout = live.database.timeout_s
        match args.shards_command:
            case "show":
                return await _show(live, registry.pool, args.json, timeout)
            case "migrate":
                async with registry.pool.acquire(timeout=timeout) as conn:
                    try:
                        old, new = await leases.migrate_shards(
                            conn, args.to, live.leases.ttl_s, timeout
                        )
                    except leases.HostsRunning as exc:
                        print(
                            f"botvisor: hosts still run on this cluster: {', '.join(exc.hosts)};"
                            " stop every host (their leases must be released or expired)"
                            " before changing the shard count",
                            file=sys.stderr,
                        )
                        return ExitCode.FAILURE
                print(
                    f"shards: {old if old is not None else 'none stored'} -> {new}; "
                    f"set workers.shards = {new} on every host before starting them",
                    flush=True,
                )
                return 0
    raise AssertionError(args.shards_command)


async def _show(settings: Settings, pool: object, as_json: bool, timeout: float) -> int:
    import asyncpg

    assert isinstance(pool, asyncpg.Pool)
    stored = await leases.stored_shards(pool, timeout)
    rows = await leases.leases(pool, timeout)
    hosts = await leases.hosts(pool, settings.leases.ttl_s, timeout)
    if as_json:
        print(
            orjson.dumps(
                {
                    "shards": stored,
                    "hosts": [leases.as_dict(h) for h in hosts],
                    "leases": [leases.as_dict(r) for r in rows],
                }
            ).decode()
        )
        return 0
    held: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.host is not None and (row.expires_in_s or 0) > 0:
            held[row.host].append(row.shard)
    free = [r.shard for r in rows if r.host is None or (r.expires_in_s or 0) <= 0]
    print(f"shards: {stored if stored is not None else 'not stored yet (no host started)'}")
    print(f"{'HOST':<24} {'ALIVE':<5} {'READY':<5} {'SHARDS':>6}  {'SEEN s':>6}  LIST")
    for h in hosts:
        print(
            f"{h.host:<24} {'yes' if h.alive else 'no':<5} {'yes' if h.ready else 'no':<5} "
            f"{len(held.get(h.host, [])):>6}  {h.seen_age_s:>6.1f}  {_ranges(held.get(h.host, []))}"
        )
    print(f"free or expired: {len(free)} {_ranges(free)}")
    return 0


def _ranges(shards: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    out: list[str] = []
    for s in sorted(shards):
        if out and out[-1].split("-")[-1] == str(s - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{s}"
        else:
            out.append(str(s))
    return ",".join(out)
