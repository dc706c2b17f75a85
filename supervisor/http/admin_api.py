"""The admin API on the master's HTTP port: /v1/bots… and /v1/openapi.json.

Runs in the master's event loop. Every operation goes through supervisor/registry/bot_service.py,
the same code `botvisor bots …` runs. Authentication: `Authorization: Bearer <key>`,
an owner's API key (its own bots only; another owner's bot is a 404) or
`security.admin_key` (all bots). Errors are JSON `{"error": {"code", "message"}}`.
The route table below is also the source of the OpenAPI document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Final, TypeVar

import asyncpg
import orjson
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from context import release_chat
from supervisor.http.auth import caller_of
from supervisor.http.common import (
    ADMIN_KEY,
    AdminContext,
    ApiError,
    error_response,
    json_response,
    source_of,
)
from supervisor.http.models import Bot, BotCreate, BotList, BotPatch, BotTokenReplace, ChatRelease
from supervisor.http.openapi import HOST_OPERATIONS, Handler, Operation, Reply, build_document
from supervisor.registry.bot_records import BotMode
from supervisor.registry.bot_service import BotService
from supervisor.registry.bot_service_errors import BotServiceError, ErrorKind, QuotaExceeded
from supervisor.registry.owners import Caller

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
_BODY_TIMEOUT_S: Final = 10.0
_MIN_INT64: Final = -(2**63)
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


def _model(data: BaseModel, status: int = 200, **headers: str) -> web.Response:
    return json_response(data.model_dump(mode="json"), status, **headers)


async def _body(request: web.Request, model: type[M]) -> M:
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


def _int64(request: web.Request, name: str, what: str, minimum: int) -> int:
    """A path id: ASCII digits (the route allows no others) within signed 64 bits."""
    value = int(request.match_info[name])
    if not minimum <= value <= _MAX_INT64:
        raise ApiError(404, "not_found", f"{what} {value} does not exist")
    return value


def _bot_id(request: web.Request) -> int:
    return _int64(request, "id", "bot", 1)


Endpoint = Callable[[web.Request, Caller, BotService], Awaitable[web.Response]]


def _endpoint(fn: Endpoint) -> Handler:
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


# -- endpoints ------------------------------------------------------------------------------


async def create_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    body = await _body(request, BotCreate)
    record = await svc.register(
        caller,
        body.token.get_secret_value(),
        handler=body.handler,
        settings=body.settings,
        owner=body.owner,
    )
    return _model(Bot.of(record), 201, Location=f"/v1/bots/{record.id}")


async def list_bots(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    return _model(BotList(bots=[Bot.of(r) for r in await svc.list(caller)]))


async def get_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    return _model(Bot.of(await svc.get(caller, _bot_id(request))))


async def patch_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    bot_id = _bot_id(request)
    body = await _body(request, BotPatch)
    if body.handler is None and body.settings is None and body.mode is None:
        raise ApiError(422, "invalid", "body: give `handler`, `settings` and/or `mode` to change")
    record = await svc.update(
        caller,
        bot_id,
        handler=body.handler,
        settings=body.settings,
        mode=None if body.mode is None else BotMode(body.mode),
    )
    return _model(Bot.of(record))


async def delete_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    await svc.remove(caller, _bot_id(request))
    return web.Response(status=204)


async def pause_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    return _model(Bot.of(await svc.pause(caller, _bot_id(request))))


async def resume_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    return _model(Bot.of(await svc.resume(caller, _bot_id(request))))


async def replace_token(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    body = await _body(request, BotTokenReplace)
    token = body.token.get_secret_value()
    return _model(Bot.of(await svc.replace_token(caller, _bot_id(request), token)))


async def release_chat_view(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    """End an operator handoff: the bot answers that chat again (same code as the CLI)."""
    bot_id = _bot_id(request)
    await svc.get(caller, bot_id)  # another owner's bot is a 404 here too
    store = request.app[ADMIN_KEY].context
    if store is None:
        raise ApiError(503, "unavailable", "conversation contexts are not available here")
    chat_id = _int64(request, "chat", "chat", _MIN_INT64)
    released = await release_chat(store, bot_id, chat_id)
    audit = request.app[ADMIN_KEY].audit
    if audit is not None:
        outcome = "ok" if released else "not_handed_off"
        target = f"bot:{bot_id}/chat:{chat_id}"
        audit.record(caller, "chat.release", target, source=source_of(request), outcome=outcome)
    if not released:
        raise ApiError(404, "not_handed_off", f"chat {chat_id} of bot {bot_id} is not handed off")
    return _model(ChatRelease(bot_id=bot_id, chat_id=chat_id, released=True))


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[_DOCUMENT_KEY], content_type="application/json", charset="utf-8"
    )


_DOCUMENT_KEY: Final = web.AppKey("openapi", bytes)
_ONE = "/v1/bots/{id}"
_BOT = (Reply(200, "The bot.", Bot),)
_RW = (401, 404, 429, 503)
ADMIN_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path="/v1/bots",
        operation_id="createBot",
        summary="Register a bot: getMe checks its token, then it starts polling within a second.",
        replies=(Reply(201, "Registered.", Bot),),
        errors=(400, 401, 403, 408, 409, 413, 422, 429, 502, 503),
        body=BotCreate,
        auth=True,
        handler=_endpoint(create_bot),
    ),
    Operation(
        method="GET",
        path="/v1/bots",
        operation_id="listBots",
        summary="The caller's bots (the admin's: all), by id.",
        replies=(Reply(200, "Bots.", BotList),),
        errors=(401, 429, 503),
        auth=True,
        handler=_endpoint(list_bots),
    ),
    Operation(
        method="GET",
        path=_ONE,
        operation_id="getBot",
        summary="One bot.",
        replies=_BOT,
        errors=_RW,
        auth=True,
        handler=_endpoint(get_bot),
    ),
    Operation(
        method="PATCH",
        path=_ONE,
        operation_id="updateBot",
        summary="Replace its handler and/or settings; the revision goes up.",
        replies=_BOT,
        errors=(400, 401, 404, 408, 413, 422, 429, 503),
        body=BotPatch,
        auth=True,
        handler=_endpoint(patch_bot),
    ),
    Operation(
        method="DELETE",
        path=_ONE,
        operation_id="deleteBot",
        summary="Unregister: it stops polling.",
        replies=(Reply(204, "Removed."),),
        errors=_RW,
        auth=True,
        handler=_endpoint(delete_bot),
    ),
    Operation(
        method="POST",
        path=_ONE + "/pause",
        operation_id="pauseBot",
        summary="Stop polling, keep it registered.",
        replies=_BOT,
        errors=_RW,
        auth=True,
        handler=_endpoint(pause_bot),
    ),
    Operation(
        method="POST",
        path=_ONE + "/resume",
        operation_id="resumeBot",
        summary="Poll again (a disabled bot is tried again).",
        replies=_BOT,
        errors=_RW,
        auth=True,
        handler=_endpoint(resume_bot),
    ),
    Operation(
        method="PUT",
        path=_ONE + "/token",
        operation_id="replaceBotToken",
        summary="Give it a new token (same bot id; checked with getMe, stored re-encrypted); "
        "owner, handler and settings stay, a disabled bot polls again.",
        replies=_BOT,
        errors=(400, 401, 404, 408, 413, 422, 502, 503),
        body=BotTokenReplace,
        auth=True,
        handler=_endpoint(replace_token),
    ),
    Operation(
        method="POST",
        path=_ONE + "/chats/{chat}/release",
        operation_id="releaseChat",
        summary="End an operator handoff in one chat: the bot replies there again.",
        replies=(Reply(200, "Whether the chat was handed off.", ChatRelease),),
        errors=_RW,
        auth=True,
        handler=_endpoint(release_chat_view),
    ),
    Operation(
        method="GET",
        path="/v1/openapi.json",
        operation_id="openapi",
        summary="This document (OpenAPI 3.1).",
        replies=(Reply(200, "The document."),),
        handler=openapi_json,
    ),
)


def _version() -> str:
    try:
        return version("botvisor")
    except PackageNotFoundError:
        return "0"


def add_admin_routes(
    app: web.Application, ctx: AdminContext, extra: tuple[Operation, ...] = ()
) -> None:
    """Register the admin API on the master's app, plus `extra` operations of other modules
    (broadcasts, owners, audit, upgrade); the document covers its other routes too."""
    app[ADMIN_KEY] = ctx
    operations = (*ADMIN_OPERATIONS, *extra)
    app[_DOCUMENT_KEY] = orjson.dumps(
        build_document((*HOST_OPERATIONS, *operations), version=_version())
    )
    for op in operations:
        assert op.handler is not None
        # [0-9], not \d: Python's \d also matches Arabic-Indic and full-width digits
        path = op.path.replace("{id}", r"{id:[0-9]{1,19}}")
        path = path.replace("{owner}", r"{owner:[0-9]{1,19}}")
        path = path.replace("{chat}", r"{chat:-?[0-9]{1,19}}")
        path = path.replace("{broadcast}", r"{broadcast:[0-9]{1,19}}")
        app.router.add_route(op.method, path, op.handler)
