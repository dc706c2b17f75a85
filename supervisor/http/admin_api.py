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
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, TypeVar

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from config import Settings
from context import ContextStore, release_chat
from supervisor.http.models import Bot, BotCreate, BotList, BotPatch, BotTokenReplace, ChatRelease
from supervisor.http.openapi import HOST_OPERATIONS, Handler, Operation, Reply, build_document
from supervisor.registry.bot_service import BotService, BotServiceError, ErrorKind
from supervisor.registry.bots import Registry
from supervisor.registry.owners import Caller, authenticate

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
_BODY_TIMEOUT_S: Final = 10.0
_MAX_ID: Final = 2**63 - 1
_STATUS: Final = {
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.INVALID: 422,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.UPSTREAM: 502,
}


@dataclass(slots=True)
class AdminContext:
    """What the handlers need. `settings` is replaced on reload (run.py)."""

    registry: Registry
    settings: Settings
    session: aiohttp.ClientSession
    #: conversation contexts (operator handoff release); None in API-only tests
    context: ContextStore | None = None
    #: the master's Redis client, for reconcile hints
    redis: aioredis.Redis | None = None

    def service(self) -> BotService:
        return BotService(self.registry, self.settings, self.session, self.redis)


ADMIN_KEY: Final = web.AppKey("admin", AdminContext)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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


def _model(data: BaseModel, status: int = 200, **headers: str) -> web.Response:
    return json_response(data.model_dump(mode="json"), status, **headers)


async def _caller(request: web.Request) -> Caller:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "missing_key",
            "send `Authorization: Bearer <key>` with an owner's API key or security.admin_key",
        )
    ctx = request.app[ADMIN_KEY]
    caller = await authenticate(ctx.registry, ctx.settings, key.strip())
    if caller is None:
        raise ApiError(401, "bad_key", "the key is not an owner's API key nor the admin key")
    return caller


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
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(422, "invalid", fields) from None


def _bot_id(request: web.Request) -> int:
    bot_id = int(request.match_info["id"])
    if not 0 < bot_id <= _MAX_ID:
        raise ApiError(404, "not_found", f"bot {bot_id} is not registered")
    return bot_id


Endpoint = Callable[[web.Request, Caller, BotService], Awaitable[web.Response]]


def _endpoint(fn: Endpoint) -> Handler:
    """Authenticate, run, and map service and registry errors to their status."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            caller = await _caller(request)
            return await fn(request, caller, request.app[ADMIN_KEY].service())
        except ApiError as exc:
            extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
            return error_response(exc.status, exc.code, exc.message, **extra)
        except BotServiceError as exc:
            return error_response(_STATUS[exc.kind], exc.code, exc.message)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("api.registry_unavailable", path=request.path, error=type(exc).__name__)
            return error_response(
                503, "unavailable", "the registry (PostgreSQL) did not answer in time; try again"
            )

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
    if body.handler is None and body.settings is None:
        raise ApiError(422, "invalid", "body: give `handler` and/or `settings` to change")
    record = await svc.update(caller, bot_id, handler=body.handler, settings=body.settings)
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
    chat_id = int(request.match_info["chat"])
    released = await release_chat(store, bot_id, chat_id)
    return _model(ChatRelease(bot_id=bot_id, chat_id=chat_id, released=released))


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[_DOCUMENT_KEY], content_type="application/json", charset="utf-8"
    )


_DOCUMENT_KEY: Final = web.AppKey("openapi", bytes)
_ONE = "/v1/bots/{id}"
_BOT = (Reply(200, "The bot.", Bot),)
_RW = (401, 404, 503)
ADMIN_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path="/v1/bots",
        operation_id="createBot",
        summary="Register a bot: getMe checks its token, then it starts polling within a second.",
        replies=(Reply(201, "Registered.", Bot),),
        errors=(400, 401, 403, 408, 409, 413, 422, 502, 503),
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
        errors=(401, 503),
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
        errors=(400, 401, 404, 408, 413, 422, 503),
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


def add_admin_routes(app: web.Application, ctx: AdminContext) -> None:
    """Register the admin API on the master's app; the document covers its other routes too."""
    app[ADMIN_KEY] = ctx
    app[_DOCUMENT_KEY] = orjson.dumps(
        build_document((*HOST_OPERATIONS, *ADMIN_OPERATIONS), version=_version())
    )
    for op in ADMIN_OPERATIONS:
        assert op.handler is not None
        path = op.path.replace("{id}", r"{id:\d{1,19}}").replace("{chat}", r"{chat:-?\d{1,19}}")
        app.router.add_route(op.method, path, op.handler)
