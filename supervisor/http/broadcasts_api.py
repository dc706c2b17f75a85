"""The admin API's broadcasts: /v1/bots/{id}/broadcasts…

Runs in the master's event loop; authentication, error mapping and owner isolation as in
supervisor/http/endpoint.py (another owner's bot is the same 404 as an unknown one).
Every operation goes through supervisor/registry/broadcast_service.py, the code
`botvisor broadcast` runs.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from supervisor.http.common import ADMIN_KEY, source_of
from supervisor.http.endpoint import endpoint, model_response, path_bot_id, path_int64, read_body
from supervisor.http.openapi import Operation, Reply
from supervisor.registry.bot_service import BotService
from supervisor.registry.broadcast_records import BroadcastRecord, BroadcastState
from supervisor.registry.broadcast_service import BroadcastService, NewBroadcast
from supervisor.registry.owners import Caller


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Broadcast(_Model):
    """A broadcast and its progress."""

    id: int
    bot_id: int
    state: BroadcastState
    total: int = Field(description="Chats it goes to (seen, not blocked when created).")
    sent: int
    failed: int
    blocked: int = Field(description="Chats found blocked/deactivated (skipped from now on).")
    unknown: int = Field(
        description="Chats in doubt after a worker died mid-send: never sent twice, so they "
        "may have missed it."
    )
    remaining: int
    rate: float = Field(description="Messages per second over its last batch.")
    eta_s: float | None = Field(description="Seconds left at that rate, while running.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, r: BroadcastRecord) -> Broadcast:
        return cls(
            id=r.id,
            bot_id=r.bot_id,
            state=r.state,
            total=r.total,
            sent=r.sent,
            failed=r.failed,
            blocked=r.blocked,
            unknown=r.unknown,
            remaining=r.remaining,
            rate=r.rate,
            eta_s=r.eta_s,
            created_at=r.created_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
        )


class BroadcastList(_Model):
    broadcasts: list[Broadcast]


class DryRun(_Model):
    bot_id: int
    dry_run: bool = True
    audience: int = Field(description="Chats a broadcast would go to now.")


def _service(request: web.Request) -> BroadcastService:
    ctx = request.app[ADMIN_KEY]
    return BroadcastService(ctx.registry, ctx.settings, audit=ctx.audit, source=source_of(request))


def _broadcast_id(request: web.Request) -> int:
    return path_int64(request, "broadcast", "broadcast", 1)


async def create_broadcast(request: web.Request, caller: Caller, _: BotService) -> web.Response:
    bot_id = path_bot_id(request)
    body = await read_body(request, NewBroadcast)
    svc = _service(request)
    if body.dry_run:
        return model_response(DryRun(bot_id=bot_id, audience=await svc.audience(caller, bot_id)))
    record = await svc.start(caller, bot_id, body)
    location = f"/v1/bots/{bot_id}/broadcasts/{record.id}"
    return model_response(Broadcast.of(record), 201, Location=location)


async def list_broadcasts(request: web.Request, caller: Caller, _: BotService) -> web.Response:
    records = await _service(request).recent(caller, path_bot_id(request))
    return model_response(BroadcastList(broadcasts=[Broadcast.of(r) for r in records]))


async def get_broadcast(request: web.Request, caller: Caller, _: BotService) -> web.Response:
    svc = _service(request)
    return model_response(
        Broadcast.of(await svc.progress(caller, path_bot_id(request), _broadcast_id(request)))
    )


async def cancel_broadcast(request: web.Request, caller: Caller, _: BotService) -> web.Response:
    svc = _service(request)
    return model_response(
        Broadcast.of(await svc.cancel(caller, path_bot_id(request), _broadcast_id(request)))
    )


_MANY = "/v1/bots/{id}/broadcasts"
_ONE = _MANY + "/{broadcast}"
_ERRORS = (401, 404, 429, 503)
_ONE_REPLY = (Reply(200, "The broadcast and its progress.", Broadcast),)
BROADCAST_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path=_MANY,
        operation_id="createBroadcast",
        summary="Send a message to every chat of the bot that has not blocked it (the worker "
        "running the bot starts within a second); `dry_run` only counts the audience.",
        replies=(
            Reply(201, "Created; follow it at `Location`.", Broadcast),
            Reply(200, "Dry run: the audience.", DryRun),
        ),
        errors=(400, 401, 404, 408, 413, 422, 429, 503),
        body=NewBroadcast,
        auth=True,
        handler=endpoint(create_broadcast),
    ),
    Operation(
        method="GET",
        path=_MANY,
        operation_id="listBroadcasts",
        summary="The bot's 50 newest broadcasts, newest first.",
        replies=(Reply(200, "Broadcasts.", BroadcastList),),
        errors=_ERRORS,
        auth=True,
        handler=endpoint(list_broadcasts),
    ),
    Operation(
        method="GET",
        path=_ONE,
        operation_id="getBroadcast",
        summary="Progress: sent, failed, blocked, unknown, remaining, rate, ETA, state.",
        replies=_ONE_REPLY,
        errors=_ERRORS,
        auth=True,
        handler=endpoint(get_broadcast),
    ),
    Operation(
        method="DELETE",
        path=_ONE,
        operation_id="cancelBroadcast",
        summary="Cancel: sending stops within about a second; a finished one is unchanged.",
        replies=_ONE_REPLY,
        errors=_ERRORS,
        auth=True,
        handler=endpoint(cancel_broadcast),
    ),
    Operation(
        method="POST",
        path=_ONE + "/cancel",
        operation_id="cancelBroadcastPost",
        summary="The same as DELETE, for clients that only POST.",
        replies=_ONE_REPLY,
        errors=_ERRORS,
        auth=True,
        handler=endpoint(cancel_broadcast),
    ),
)
