"""Who an admin API request speaks for, and the lockout of addresses that guess keys.

Runs in the master's event loop. Every failure is logged with the client address and
why (`missing`, `bad`), never the key; after `security.login_free_failures` failures an
address is refused with 429 and `Retry-After` for a growing time, a right key included.
"""

from __future__ import annotations

import math

import structlog
from aiohttp import web

from supervisor.http.common import ADMIN_KEY, ApiError
from supervisor.registry.owners import Caller, authenticate

log = structlog.get_logger(__name__)


async def caller_of(request: web.Request) -> Caller:
    """The caller, or ApiError 401 (no or wrong key) / 429 (this address is locked out)."""
    ctx = request.app[ADMIN_KEY]
    source = request.remote or "unknown"
    wait = ctx.lockout.retry_after(source)
    if wait > 0:
        raise ApiError(
            429,
            "locked_out",
            f"too many failed logins from this address; try again in {math.ceil(wait)} s",
            **{"Retry-After": str(math.ceil(wait))},
        )
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "missing_key",
            "send `Authorization: Bearer <key>` with an owner's API key or security.admin_key",
            **{"WWW-Authenticate": "Bearer"},
        )
    caller = await authenticate(ctx.registry, ctx.settings, key.strip())
    if caller is None:
        failures, locked_s = ctx.lockout.failed(source)
        log.warning(
            "api.login_failed",
            source=source,
            failures=failures,
            locked_s=locked_s,
            path=request.path,
        )
        raise ApiError(
            401,
            "bad_key",
            "the key is not an owner's API key nor the admin key",
            **{"WWW-Authenticate": "Bearer"},
        )
    return caller
