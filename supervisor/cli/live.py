"""CLI commands that talk to the running daemon over Redis: `status` and `reload`
(and the helpers `botvisor upgrade` uses too, supervisor/cli/upgrade.py).

`reload` publishes the same typed `Reload` message that SIGHUP turns into, so both
take one code path in the master. `status` is a request/reply: every process pushes
its live figures to a list named in the request.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from typing import Any

import orjson
import redis.asyncio as aioredis

from config import Settings
from ipc import keys
from ipc.messages import Message, Reload, StatusRequest, encode
from ipc.redis_client import redis_client
from supervisor.exitcodes import ExitCode
from supervisor.services import open_services


def err(text: str) -> None:
    print(f"botvisor: {text}", file=sys.stderr, flush=True)


async def publish(settings: Settings, message: Message) -> tuple[aioredis.Redis, int]:
    assert settings.redis.url is not None
    client = redis_client(settings.redis.url, settings.redis.timeout_s, settings.redis.pool_max)
    listeners = await client.publish(keys.control_channel(settings.redis.prefix), encode(message))
    return client, int(listeners)


async def gather_status(settings: Settings, timeout: float = 3.0) -> list[dict[str, Any]]:
    """Ask every process of the daemon; returns the answers that came within `timeout`."""
    reply_to = keys.status_reply_key(settings.redis.prefix, secrets.token_hex(8))
    client, listeners = await publish(settings, StatusRequest(reply_to=reply_to))
    answers: list[dict[str, Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(answers) < listeners and (left := deadline - loop.time()) > 0:
            item = await client.blpop([reply_to], timeout=max(left, 0.01))
            if item is not None:
                answers.append(orjson.loads(item[1]))
        await client.delete(reply_to)
    finally:
        await client.aclose()
    return answers


async def status(settings: Settings, as_json: bool) -> int:
    async with open_services(settings, postgres=False) as live:
        try:
            answers = await gather_status(live)
        except (aioredis.RedisError, OSError) as exc:
            err(f"cannot reach Redis at the configured redis.url ({type(exc).__name__})")
            return ExitCode.FAILURE
    masters = sorted(
        (a for a in answers if a.get("role") == "master"), key=lambda a: str(a.get("host"))
    )
    workers = sorted(
        (a for a in answers if a.get("role") == "worker"),
        key=lambda a: (str(a.get("host")), a["index"]),
    )
    # several hosts answer on a shared Redis: this host's master first
    master = next((m for m in masters if m.get("host") == live.host.id), None) or next(
        iter(masters), None
    )
    if master is None:
        err("no daemon answered (is `botvisor run` running with this configuration?)")
        return ExitCode.FAILURE
    if as_json:
        print(orjson.dumps({"master": master, "masters": masters, "workers": workers}).decode())
        return 0
    for m in masters:
        mine = [w for w in workers if w.get("host", m.get("host")) == m.get("host")]
        shards = m.get("shards")
        print(
            f"host {m.get('host', '?')}: ready: {m['ready']} ({m['reason']}); "
            f"shards {len(shards) if shards is not None else 'all'}; workers {len(mine)}/"
            f"{m['workers']} answered; worker restarts {m['worker_restarts']}"
        )
    upgrade = master.get("upgrade") or {}
    if upgrade.get("id"):  # the running or last rolling upgrade (absent from older masters)
        print(f"upgrade {upgrade['id']}: {upgrade['summary']}")
    print(
        f"{'HOST':<16} {'WORKER':>6} {'PID':>8} {'STATE':<9} {'RUNNING':>9} {'BACKOFF':>7} "
        f"{'DISABLED':>8} "
        f"{'LAG ms':>7} {'UPD/s':>7} {'REPL/s':>7} {'WAITS/s':>7} {'429/s':>6} {'P99 ms':>7}"
    )
    for w in workers:
        bots, rates = w.get("bots", {}), w.get("rates", {})
        print(
            f"{str(w.get('host', '')):<16} {w['index']:>6} {w['pid']:>8} {w['state']:<9} "
            f"{bots.get('running', 0):>4}/{w.get('desired', 0):<4} {bots.get('backoff', 0):>7} "
            f"{bots.get('disabled', 0):>8} {w.get('loop_lag_s', 0) * 1000:>7.1f} "
            f"{rates.get('received_per_s', 0):>7} {rates.get('sent_per_s', 0):>7} "
            f"{rates.get('limiter_waits_per_s', 0):>7} {rates.get('telegram_429_per_s', 0):>6} "
            f"{w.get('p99_ms', 0):>7}"
        )
    return 0


async def reload(settings: Settings) -> int:
    """Publish `Reload`; with Redis unreachable, fall back to SIGHUP (same handler)."""
    async with open_services(settings, postgres=False) as live:
        try:
            client, listeners = await publish(live, Reload())
            await client.aclose()
        except (aioredis.RedisError, OSError):
            listeners = 0
    if listeners:
        print(f"reload requested ({listeners} process(es) listening)")
        return 0
    return _sighup(settings)


def _sighup(settings: Settings) -> int:
    from supervisor.master.run import pidfile

    path = pidfile(settings)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except FileNotFoundError:
        err(f"no daemon listens on Redis and there is no {path}: is `botvisor run` running?")
        return ExitCode.FAILURE
    except (ValueError, ProcessLookupError, PermissionError) as exc:
        err(f"cannot signal the master from {path}: {exc}")
        return ExitCode.FAILURE
    print(f"reload requested by SIGHUP (pid {pid})")
    return 0
