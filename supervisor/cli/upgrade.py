"""`botvisor upgrade`: a rolling code upgrade of the running daemon, followed to its end.

Publishes an `Upgrade` control message on Redis (the master runs the same handler as for
SIGUSR2 and `POST /v1/upgrade`), reads the master's answer (accepted, or the upgrade
already running), then follows the progress in the master's status answers until the
upgrade is done or failed. Progress lines go to stderr, the one-line result to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from typing import Any, Final

import orjson
import redis.asyncio as aioredis

from config import Settings
from ipc import keys
from ipc.messages import Upgrade
from supervisor.cli.live import err, gather_status, publish
from supervisor.exitcodes import ExitCode
from supervisor.services import open_services

#: how long the master has to answer the request itself
ANSWER_S: Final = 5.0
#: between two looks at the progress
POLL_S: Final = 0.5
#: status rounds in a row without the master's answer before we give up on it
MASTER_SILENT_ROUNDS: Final = 10
_FINISHED: Final = frozenset({"done", "failed"})


async def upgrade_command(settings: Settings, args: argparse.Namespace) -> int:
    async with open_services(settings, postgres=False) as live:
        try:
            answer = await _request(live)
        except (aioredis.RedisError, OSError) as exc:
            err(f"cannot reach Redis at the configured redis.url ({type(exc).__name__})")
            return ExitCode.FAILURE
        if answer is None:
            err("no daemon answered (is `botvisor run` running with this configuration?)")
            return ExitCode.FAILURE
        progress: dict[str, Any] = answer["upgrade"]
        if not answer["accepted"]:
            err(f"upgrade refused: {progress['summary']}; try again when it has ended")
            return ExitCode.FAILURE
        try:
            async with asyncio.timeout(args.timeout):
                final = await _follow(live, progress)
        except TimeoutError:
            err(f"still upgrading after {args.timeout:g} s (it goes on; see `botvisor status`)")
            return ExitCode.FAILURE
        except (aioredis.RedisError, OSError) as exc:
            err(f"lost Redis while following the upgrade ({type(exc).__name__})")
            return ExitCode.FAILURE
    if final is None:
        err("the daemon stopped answering during the upgrade")
        return ExitCode.FAILURE
    if args.json:
        print(orjson.dumps(final).decode())
    if final["phase"] != "done":
        err(final["summary"])
        return ExitCode.FAILURE
    if not args.json:
        print(final["summary"])
    return ExitCode.OK


async def _request(settings: Settings) -> dict[str, Any] | None:
    """Ask the master; its answer, or None if no daemon listens or none answered."""
    reply_to = keys.status_reply_key(settings.redis.prefix, secrets.token_hex(8))
    client, listeners = await publish(settings, Upgrade(reply_to=reply_to))
    try:
        if not listeners:
            return None
        item = await client.blpop([reply_to], timeout=ANSWER_S)
        await client.delete(reply_to)
    finally:
        await client.aclose()
    return None if item is None else dict(orjson.loads(item[1]))


async def _follow(settings: Settings, progress: dict[str, Any]) -> dict[str, Any] | None:
    """Poll the master's status until upgrade `progress['id']` has finished."""
    mine, said, silent = progress["id"], progress["summary"], 0
    print(said, file=sys.stderr, flush=True)
    while silent < MASTER_SILENT_ROUNDS:
        await asyncio.sleep(POLL_S)  # another process's progress: polled
        answers = await gather_status(settings)
        master = next((a for a in answers if a.get("role") == "master"), None)
        if master is None or "upgrade" not in master:
            silent += 1
            continue
        silent, progress = 0, master["upgrade"]
        if progress["id"] != mine:
            return None  # a restarted master: ours ended with the old one
        if progress["phase"] in _FINISHED:
            return progress
        if progress["summary"] != said:
            said = progress["summary"]
            print(said, file=sys.stderr, flush=True)
    return None
