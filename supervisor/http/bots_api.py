"""The admin API's bots: /v1/bots and /v1/bots/{id}… (register, list, show, change, pause,
resume, new token, remove).

Runs in the master's event loop. Every operation goes through supervisor/registry/bot_service.py,
the same code `botvisor bots …` runs; authentication and error mapping are
supervisor/http/endpoint.py's (an owner's key sees its own bots only; another owner's bot is
a 404).
"""

from __future__ import annotations

from aiohttp import web

from supervisor.http.common import ApiError
from supervisor.http.endpoint import endpoint, model_response, path_bot_id, read_body
from supervisor.http.models import Bot, BotCreate, BotList, BotPatch, BotTokenReplace
from supervisor.http.openapi import Operation, Reply
from supervisor.registry.bot_records import BotMode
from supervisor.registry.bot_service import BotService
from supervisor.registry.owners import Caller


async def create_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    body = await read_body(request, BotCreate)
    record = await svc.register(
        caller,
        body.token.get_secret_value(),
        handler=body.handler,
        settings=body.settings,
        owner=body.owner,
    )
    return model_response(Bot.of(record), 201, Location=f"/v1/bots/{record.id}")


async def list_bots(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    return model_response(BotList(bots=[Bot.of(r) for r in await svc.list(caller)]))


async def get_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    return model_response(Bot.of(await svc.get(caller, path_bot_id(request))))


async def patch_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    bot_id = path_bot_id(request)
    body = await read_body(request, BotPatch)
    if body.handler is None and body.settings is None and body.mode is None:
        raise ApiError(422, "invalid", "body: give `handler`, `settings` and/or `mode` to change")
    record = await svc.update(
        caller,
        bot_id,
        handler=body.handler,
        settings=body.settings,
        mode=None if body.mode is None else BotMode(body.mode),
    )
    return model_response(Bot.of(record))


async def delete_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    await svc.remove(caller, path_bot_id(request))
    return web.Response(status=204)


async def pause_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    return model_response(Bot.of(await svc.pause(caller, path_bot_id(request))))


async def resume_bot(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    return model_response(Bot.of(await svc.resume(caller, path_bot_id(request))))


async def replace_token(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    body = await read_body(request, BotTokenReplace)
    token = body.token.get_secret_value()
    return model_response(Bot.of(await svc.replace_token(caller, path_bot_id(request), token)))


ONE_BOT = "/v1/bots/{id}"
_BOT = (Reply(200, "The bot.", Bot),)
#: what an operation on one existing bot may answer besides its success
ONE_BOT_ERRORS = (401, 404, 429, 503)
BOT_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path="/v1/bots",
        operation_id="createBot",
        summary="Register a bot: getMe checks its token, then it starts polling within a second.",
        replies=(Reply(201, "Registered.", Bot),),
        errors=(400, 401, 403, 408, 409, 413, 422, 429, 502, 503),
        body=BotCreate,
        auth=True,
        handler=endpoint(create_bot),
    ),
    Operation(
        method="GET",
        path="/v1/bots",
        operation_id="listBots",
        summary="The caller's bots (the admin's: all), by id.",
        replies=(Reply(200, "Bots.", BotList),),
        errors=(401, 429, 503),
        auth=True,
        handler=endpoint(list_bots),
    ),
    Operation(
        method="GET",
        path=ONE_BOT,
        operation_id="getBot",
        summary="One bot.",
        replies=_BOT,
        errors=ONE_BOT_ERRORS,
        auth=True,
        handler=endpoint(get_bot),
    ),
    Operation(
        method="PATCH",
        path=ONE_BOT,
        operation_id="updateBot",
        summary="Replace its handler and/or settings; the revision goes up.",
        replies=_BOT,
        errors=(400, 401, 403, 404, 408, 413, 422, 429, 503),
        body=BotPatch,
        auth=True,
        handler=endpoint(patch_bot),
    ),
    Operation(
        method="DELETE",
        path=ONE_BOT,
        operation_id="deleteBot",
        summary="Unregister: it stops polling.",
        replies=(Reply(204, "Removed."),),
        errors=ONE_BOT_ERRORS,
        auth=True,
        handler=endpoint(delete_bot),
    ),
    Operation(
        method="POST",
        path=ONE_BOT + "/pause",
        operation_id="pauseBot",
        summary="Stop polling, keep it registered.",
        replies=_BOT,
        errors=ONE_BOT_ERRORS,
        auth=True,
        handler=endpoint(pause_bot),
    ),
    Operation(
        method="POST",
        path=ONE_BOT + "/resume",
        operation_id="resumeBot",
        summary="Poll again (a disabled bot is tried again).",
        replies=_BOT,
        errors=ONE_BOT_ERRORS,
        auth=True,
        handler=endpoint(resume_bot),
    ),
    Operation(
        method="PUT",
        path=ONE_BOT + "/token",
        operation_id="replaceBotToken",
        summary="Give it a new token (same bot id; checked with getMe, stored re-encrypted); "
        "owner, handler and settings stay, a disabled bot polls again.",
        replies=_BOT,
        errors=(400, 401, 404, 408, 413, 422, 502, 503),
        body=BotTokenReplace,
        auth=True,
        handler=endpoint(replace_token),
    ),
)
