"""The admin API's conversations: POST /v1/bots/{id}/chats/{chat}/release ends an operator
handoff, so the bot answers that chat again (the code `botvisor chats release` runs).

Runs in the master's event loop; authentication, error mapping and owner isolation as in
supervisor/http/endpoint.py (another owner's bot is the same 404 as an unknown one).
"""

from __future__ import annotations

from aiohttp import web

from context import release_chat
from supervisor.http.bots_api import ONE_BOT, ONE_BOT_ERRORS
from supervisor.http.common import ADMIN_KEY, ApiError, source_of
from supervisor.http.endpoint import MIN_INT64, endpoint, model_response, path_bot_id, path_int64
from supervisor.http.models import ChatRelease
from supervisor.http.openapi import Operation, Reply
from supervisor.registry.bot_service import BotService
from supervisor.registry.owners import Caller


async def release_chat_view(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    """End an operator handoff: the bot answers that chat again (same code as the CLI)."""
    bot_id = path_bot_id(request)
    await svc.get(caller, bot_id)  # another owner's bot is a 404 here too
    store = request.app[ADMIN_KEY].context
    if store is None:
        raise ApiError(503, "unavailable", "conversation contexts are not available here")
    chat_id = path_int64(request, "chat", "chat", MIN_INT64)
    released = await release_chat(store, bot_id, chat_id)
    audit = request.app[ADMIN_KEY].audit
    if audit is not None:
        outcome = "ok" if released else "not_handed_off"
        target = f"bot:{bot_id}/chat:{chat_id}"
        audit.record(caller, "chat.release", target, source=source_of(request), outcome=outcome)
    if not released:
        raise ApiError(404, "not_handed_off", f"chat {chat_id} of bot {bot_id} is not handed off")
    return model_response(ChatRelease(bot_id=bot_id, chat_id=chat_id, released=True))


CHAT_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path=ONE_BOT + "/chats/{chat}/release",
        operation_id="releaseChat",
        summary="End an operator handoff in one chat: the bot replies there again.",
        replies=(Reply(200, "Whether the chat was handed off.", ChatRelease),),
        errors=ONE_BOT_ERRORS,
        auth=True,
        handler=endpoint(release_chat_view),
    ),
)
