"""What the admin API's modules share: its context, its error type and JSON replies.

Runs in the master's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiohttp import web

from config import Settings
from context import ContextStore
from supervisor.http.openapi import Handler
from supervisor.registry.audit import AuditLog
from supervisor.registry.bot_service import BotService
from supervisor.registry.bots import Registry
from supervisor.registry.lockout import Lockout


def _lockout(settings: Settings) -> Lockout:
    sec = settings.security
    return Lockout(free=sec.login_free_failures, max_s=sec.login_lockout_max_s)


@dataclass(slots=True)
class AdminContext:
    """What the handlers need. `settings` is replaced on reload (run.py); the lockout's
    numbers are the ones at start."""

    registry: Registry
    settings: Settings
    session: aiohttp.ClientSession
    #: conversation contexts (operator handoff release); None in API-only tests
    context: ContextStore | None = None
    #: the master's Redis client, for reconcile hints
    redis: aioredis.Redis | None = None
    #: where actions are recorded (supervisor/registry/audit.py); None: not recorded
    audit: AuditLog | None = None
    #: failed logins per client address (supervisor/registry/lockout.py)
    lockout: Lockout = field(init=False)

    def __post_init__(self) -> None:
        self.lockout = _lockout(self.settings)

    def service(self, source: str = "http") -> BotService:
        """The bot service for one request; `source` ("http:<ip>") goes into audit rows."""
        return BotService(
            self.registry, self.settings, self.session, self.redis, audit=self.audit, source=source
        )


def source_of(request: web.Request) -> str:
    """Where an HTTP request comes from, as audit rows name it."""
    return f"http:{request.remote or 'unknown'}"


ADMIN_KEY: Final = web.AppKey("admin", AdminContext)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def json_response(data: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, code: str, message: str, **headers: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status, **headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 4xx (unknown path 404, 405, body too large 413) as `{"error": …}`."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        # the path is not echoed: a client may have put a token in it by mistake
        message = f"{exc.reason}; the endpoints are listed at /v1/openapi.json"
        return error_response(exc.status, code, message, **allow)
