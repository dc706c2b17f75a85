"""`botvisor doctor`: one line per check, ✔ or ✖ with what to do; exit 1 if any ✖.

Checks the configuration (it loaded), Redis, PostgreSQL and its migrations, the Bot API
endpoint, the state directory's permissions, the open-files limit against the number of
bots, and the systemd unit when one is installed. Every check has a timeout; none
changes anything (a private PostgreSQL that does not exist yet is not created).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from python_socks import ProxyError

from bots.telegram.sessions import open_bot_api_session
from config import Settings, config_path
from config.loading import state_dir_origin
from supervisor.cli.preflight import has_private_postgres
from supervisor.failures import postgres_address, redis_address
from supervisor.registry.migrate import available

UNIT_PATHS = (
    Path("/etc/systemd/system/botvisor.service"),
    Path("/lib/systemd/system/botvisor.service"),
)
#: sockets and files a worker needs besides one long poll per bot
FD_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    what: str
    todo: str = ""

    def line(self) -> str:
        return f"✔ {self.what}" if self.ok else f"✖ {self.what}; {self.todo}"


async def doctor_command(settings: Settings, args: argparse.Namespace) -> int:
    checks = [_config(args)]
    checks.append(await _redis(settings))
    pg, bots = await _postgres(settings)
    checks.append(pg)
    checks.append(await _bot_api(settings))
    checks.append(_state_dir(settings, args))
    checks.append(_nofile(settings, bots))
    checks.append(await asyncio.to_thread(_systemd))
    for check in checks:
        print(check.line(), flush=True)
    return 0 if all(c.ok for c in checks) else 1


def _config(args: argparse.Namespace) -> Check:
    file = config_path(args.config)
    where = f"{file}" if file is not None else "no config file (defaults)"
    return Check(True, f"configuration: valid ({where} + BOTVISOR_* environment)")


async def _redis(settings: Settings) -> Check:
    if settings.redis.url is None:
        return Check(True, "Redis: a private one in the state directory, started on demand")
    where = redis_address(settings)
    client = aioredis.from_url(
        settings.redis.url, socket_timeout=5, socket_connect_timeout=5, retry_on_timeout=False
    )
    try:
        await asyncio.wait_for(client.ping(), 6)
    except (aioredis.RedisError, OSError, TimeoutError) as exc:
        return Check(
            False, f"Redis at {where}: {exc or type(exc).__name__}", "start Redis or fix redis.url"
        )
    finally:
        await client.aclose()
    return Check(True, f"Redis at {where} answers")


async def _postgres(settings: Settings) -> tuple[Check, int | None]:
    """The check and the number of registered bots (None when unknown)."""
    if settings.database.url is None:
        where = Path(settings.state.dir).absolute()
        if not has_private_postgres(where):
            return Check(
                True, "PostgreSQL: a private one, not created yet (`bots add` creates it)"
            ), 0
        from supervisor.services import open_services

        async with open_services(settings, redis=False) as live:
            return await _postgres_at(live)
    return await _postgres_at(settings)


async def _postgres_at(settings: Settings) -> tuple[Check, int | None]:
    assert settings.database.url is not None
    where = postgres_address(settings)
    try:
        conn = await asyncpg.connect(settings.database.url.get_secret_value(), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return Check(
            False,
            f"PostgreSQL at {where}: {exc or type(exc).__name__}",
            "start PostgreSQL or fix database.url (role, database, password)",
        ), None
    try:
        done = (
            await conn.fetch("SELECT version FROM schema_migrations", timeout=5)
            if await conn.fetchval("SELECT to_regclass('schema_migrations')", timeout=5)
            else []
        )
        pending = sorted({m.version for m in available()} - {r["version"] for r in done})
        bots = (
            await conn.fetchval("SELECT count(*) FROM bots", timeout=5)
            if await conn.fetchval("SELECT to_regclass('bots')", timeout=5)
            else 0
        )
    finally:
        await conn.close(timeout=5)
    if pending:
        return Check(
            False,
            f"PostgreSQL at {where}: migrations {pending} not applied",
            "run `botvisor migrate`",
        ), int(bots)
    return Check(True, f"PostgreSQL at {where}: answers, migrations applied, {bots} bot(s)"), int(
        bots
    )


async def _bot_api(settings: Settings) -> Check:
    """Any HTTP answer means the endpoint is reachable. Connects as the workers do (through
    telegram.proxy when one is set, with the same TLS settings)."""
    base = settings.telegram.api_base
    timeout = aiohttp.ClientTimeout(total=settings.telegram.request_timeout_s)
    try:
        async with open_bot_api_session(settings) as session:
            async with session.get(
                f"{base}/bot0:doctor/getMe", allow_redirects=False, timeout=timeout
            ) as resp:
                status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError, ProxyError) as exc:
        return Check(
            False,
            f"Bot API at {base}: {exc or type(exc).__name__}",
            "check this host's network, DNS and firewall, or telegram.api_base",
        )
    return Check(True, f"Bot API at {base} answers (HTTP {status})")


def _state_dir(settings: Settings, args: argparse.Namespace) -> Check:
    where = Path(settings.state.dir).absolute()
    why = state_dir_origin(args.config)
    if not where.exists():
        parent = next(p for p in where.parents if p.exists())
        if os.access(parent, os.W_OK | os.X_OK):
            return Check(True, f"state dir {where} ({why}): not created yet, {parent} is writable")
        return Check(
            False,
            f"state dir {where} ({why}): cannot be created in {parent}",
            f"create it for this user (install -d -m 0700 {where}) or set state.dir",
        )
    mode = stat.S_IMODE(where.stat().st_mode)
    if not os.access(where, os.W_OK | os.X_OK):
        return Check(
            False,
            f"state dir {where} ({why}): not writable by this user",
            "chown it to the user botvisor runs as, or set state.dir",
        )
    if mode & 0o002:
        return Check(
            False,
            f"state dir {where}: writable by everyone (mode {mode:04o})",
            f"chmod 0700 {where}",
        )
    key = where / "encryption.key"
    if key.exists() and stat.S_IMODE(key.stat().st_mode) & 0o077:
        return Check(False, f"{key}: readable by others", f"chmod 0600 {key}")
    return Check(True, f"state dir {where} ({why}): writable, mode {mode:04o}")


def _nofile(settings: Settings, bots: int | None) -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_worker = -(-(bots or 0) // settings.workers.count) + FD_OVERHEAD
    what = f"open-files limit {soft} (hard {hard}) for {bots if bots is not None else '?'} bot(s) on {settings.workers.count} worker(s)"
    if soft != resource.RLIM_INFINITY and soft < per_worker:
        return Check(
            False,
            f"{what}: a worker needs about {per_worker}",
            "raise it (ulimit -n, or LimitNOFILE= in the systemd unit; `make` targets raise it to the hard limit)",
        )
    return Check(True, what)


def _systemd() -> Check:
    unit = next((p for p in UNIT_PATHS if p.exists()), None)
    if unit is None:
        return Check(True, "systemd unit: not installed (nothing to check)")
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return Check(True, f"systemd unit {unit}: installed (no systemctl to ask)")
    try:
        run = subprocess.run(
            [systemctl, "is-active", "botvisor"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(False, f"systemd unit {unit}: systemctl failed ({exc})", "check systemd")
    state = run.stdout.strip() or run.stderr.strip()
    if state in ("active", "activating", "reloading", "inactive"):
        return Check(True, f"systemd unit {unit}: {state}")
    return Check(
        False,
        f"systemd unit {unit}: {state}",
        "see `journalctl -u botvisor -n 50` and `systemctl status botvisor`",
    )
