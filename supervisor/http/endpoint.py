"""How an admin API operation runs: authenticate the caller, read and check its JSON body and
path ids, and map every error to a 4xx or 503 with an `{"error": {"code", "message"}}` body.

Runs in the master's event loop. Every /v1 module (bots_api.py, chats_api.py,
broadcasts_api.py, owner_api.py) wraps its handlers with `endpoint`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg
import orjson
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from supervisor.http.auth import caller_of
from supervisor.http.common import ADMIN_KEY, ApiError, error_response, json_response, source_of
from supervisor.http.openapi import Handler
from supervisor.registry.bot_service import BotService
from supervisor.registry.bot_service_errors import BotServiceError, ErrorKind, QuotaExceeded
from supervisor.registry.owners import Caller

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
_BODY_TIMEOUT_S: Final = 10.0
MIN_INT64: Final = -(2**63)
_MAX_INT64: Final = 2**63 - 1
_STATUS: Final = {
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.INVALID: 422,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.UPSTREAM: 502,
    ErrorKind.QUOTA: 403,
}
#: what "a service did not answer" looks like from here; a 503, never a 500
_OUTAGES: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    aioredis.RedisError,
    OSError,
    TimeoutError,
)


def model_response(data: BaseModel, status: int = 200, **headers: str) -> web.Response:
    return json_response(data.model_dump(mode="json"), status, **headers)


async def read_body(request: web.Request, model: type[M]) -> M:
    try:
        async with asyncio.timeout(_BODY_TIMEOUT_S):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(
            408, "timeout", f"the body did not arrive within {_BODY_TIMEOUT_S:g} s"
        ) from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON ({exc.msg})") from None
    try:
        return model.model_validate(data)
    except (ValidationError, RecursionError) as exc:
        raise ApiError(422, "invalid", _fields(exc)) from None


def _fields(exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return "body: nested too deeply"
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )[:2000]


def path_int64(request: web.Request, name: str, what: str, minimum: int) -> int:
    """A path id: ASCII digits (the route allows no others) within signed 64 bits."""
    value = int(request.match_info[name])
    if not minimum <= value <= _MAX_INT64:
        raise ApiError(404, "not_found", f"{what} {value} does not exist")
    return value


def path_bot_id(request: web.Request) -> int:
    return path_int64(request, "id", "bot", 1)


Endpoint = Callable[[web.Request, Caller, BotService], Awaitable[web.Response]]


def endpoint(fn: Endpoint) -> Handler:
    """Authenticate, run, and map every error to a 4xx or 503 with an `{"error": …}` body."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            caller = await caller_of(request)
            return await fn(request, caller, request.app[ADMIN_KEY].service(source_of(request)))
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, **exc.headers)
        except QuotaExceeded as exc:  # typed: which quota, its limit, what is used
            body = {"code": exc.code, "message": exc.message, "quota": exc.quota}
            return json_response({"error": {**body, "limit": exc.limit, "used": exc.used}}, 403)
        except BotServiceError as exc:
            return error_response(_STATUS[exc.kind], exc.code, exc.message)
        except _OUTAGES as exc:
            log.warning("api.unavailable", path=request.path, error=type(exc).__name__)
            return error_response(
                503, "unavailable", "PostgreSQL or Redis did not answer in time; try again"
            )
        except web.HTTPException:
            raise  # aiohttp's own 4xx (413 body too large), shaped by json_errors
        except Exception as exc:  # noqa: BLE001 - a bug: logged loudly, never a 500
            log.error("api.unexpected", path=request.path, error=type(exc).__name__, exc_info=True)
            return error_response(503, "internal", "the request failed; it changed nothing")

    handler.__name__ = fn.__name__
    return handler
