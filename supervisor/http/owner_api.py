"""Owners, their quotas and the audit log on the admin API: /v1/owners/{owner}… and /v1/audit.

Runs in the master's event loop, behind the same authentication and error mapping as
/v1/bots (supervisor/http/endpoint.py: `endpoint`). An owner's key sees its own owner
and its own audit rows (another owner is a 404, like another owner's bot); the admin key
sees all and alone sets quotas.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from ipc.usage import UsageCounters
from supervisor.http.common import ADMIN_KEY, ApiError, source_of
from supervisor.http.endpoint import endpoint, model_response, path_int64, read_body
from supervisor.http.models import AuditPage, Owner, QuotaUpdate
from supervisor.http.openapi import Operation, Reply
from supervisor.registry.audit import parse_since
from supervisor.registry.bot_service import BotService
from supervisor.registry.owners import Caller
from supervisor.registry.quotas import QuotaOverride, QuotaStore, owner_report

_PAGE_MAX: Final = 1000
_TEXT_MAX: Final = 100


def _owner_id(request: web.Request, caller: Caller) -> int:
    owner_id = path_int64(request, "owner", "owner", 1)
    if not caller.admin and caller.owner_id != owner_id:
        raise ApiError(404, "not_found", f"owner {owner_id} does not exist")
    return owner_id


def _counters(request: web.Request) -> UsageCounters | None:
    ctx = request.app[ADMIN_KEY]
    if ctx.redis is None:
        return None
    return UsageCounters(ctx.redis, ctx.settings.redis.prefix, ctx.settings.redis.timeout_s)


async def _report(request: web.Request, owner_id: int) -> web.Response:
    ctx = request.app[ADMIN_KEY]
    report = await owner_report(ctx.registry, ctx.settings, _counters(request), owner_id)
    if report is None:
        raise ApiError(404, "not_found", f"owner {owner_id} does not exist")
    return model_response(Owner.model_validate(report.public()))


async def get_owner(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    return await _report(request, _owner_id(request, caller))


async def set_quota(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    """Replace the owner's quota override (fields left out or null: the defaults)."""
    owner_id = _owner_id(request, caller)
    ctx = request.app[ADMIN_KEY]
    target = f"owner:{owner_id}"
    if not caller.admin:
        if ctx.audit is not None:
            ctx.audit.record(
                caller, "owner.set_quota", target, source=source_of(request), outcome="forbidden"
            )
        raise ApiError(403, "forbidden", "only the admin key may set an owner's quota")
    body = await read_body(request, QuotaUpdate)
    value = QuotaOverride(body.bots, body.messages_per_day, body.llm_tokens_per_day)
    store = QuotaStore(ctx.registry.pool, ctx.settings.database.timeout_s)
    if not await store.set_override(owner_id, value):
        raise ApiError(404, "not_found", f"owner {owner_id} does not exist")
    if ctx.audit is not None:
        ctx.audit.record(
            caller,
            "owner.set_quota",
            target,
            source=source_of(request),
            owner_id=owner_id,
            detail=body.model_dump(),
        )
    return await _report(request, owner_id)


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not 0 < len(value) <= _TEXT_MAX or "\x00" in value:
        raise ApiError(422, "invalid", f"{name}: 1-{_TEXT_MAX} characters, no NUL")
    return value


def _number(request: web.Request, name: str, default: int | None, low: int, high: int) -> Any:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and low <= int(raw) <= high):
        raise ApiError(422, "invalid", f"{name}: an integer from {low} to {high}")
    return int(raw)


async def list_audit(request: web.Request, caller: Caller, svc: BotService) -> web.Response:
    """Newest first; an owner's key sees only rows of its own owner."""
    ctx = request.app[ADMIN_KEY]
    if ctx.audit is None:
        raise ApiError(503, "unavailable", "the audit log is not available here")
    since_text = _text(request, "since")
    try:
        since = None if since_text is None else parse_since(since_text)
    except (ValueError, OverflowError) as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    limit = _number(request, "limit", 100, 1, _PAGE_MAX)
    before = _number(request, "before", None, 1, 2**63 - 1)
    await ctx.audit.flush(1.0)  # this process's queued rows are part of the answer
    rows = await ctx.audit.query(
        owner_id=caller.scope,
        since=since,
        action=_text(request, "action"),
        target=_text(request, "target"),
        before=before,
        limit=limit,
    )
    next_before = rows[-1].id if len(rows) == limit else None
    page = AuditPage.model_validate(
        {"entries": [r.public() for r in rows], "next_before": next_before}
    )
    return model_response(page)


_OWNER_REPLY = (Reply(200, "The owner, its quota and today's usage.", Owner),)
_QUERY: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    (
        "since",
        {
            "description": "Only rows since then: a duration back (`24h`, `7d`) or an "
            "ISO 8601 date or time (UTC unless it says).",
            "schema": {"type": "string", "minLength": 1, "maxLength": _TEXT_MAX},
        },
    ),
    (
        "action",
        {
            "description": "An action (`bot.pause`), or a prefix ending in `.` (`bot.`).",
            "schema": {"type": "string", "minLength": 1, "maxLength": _TEXT_MAX},
        },
    ),
    (
        "target",
        {
            "description": "A target, e.g. `bot:123` or `owner:7`.",
            "schema": {"type": "string", "minLength": 1, "maxLength": _TEXT_MAX},
        },
    ),
    (
        "before",
        {
            "description": "The `next_before` of the previous page.",
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
        },
    ),
    (
        "limit",
        {
            "description": f"Rows per page (default 100, at most {_PAGE_MAX}).",
            "schema": {"type": "integer", "minimum": 1, "maximum": _PAGE_MAX},
        },
    ),
)

OWNER_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET",
        path="/v1/owners/{owner}",
        operation_id="getOwner",
        summary="An owner with its quota and today's usage (an owner's key: itself only).",
        replies=_OWNER_REPLY,
        errors=(401, 404, 429, 503),
        auth=True,
        handler=endpoint(get_owner),
    ),
    Operation(
        method="PUT",
        path="/v1/owners/{owner}/quota",
        operation_id="setOwnerQuota",
        summary="Set an owner's quota (admin key only): each field null or left out = the "
        "[quotas] default, 0 = unlimited.",
        replies=_OWNER_REPLY,
        errors=(400, 401, 403, 404, 408, 413, 422, 429, 503),
        body=QuotaUpdate,
        auth=True,
        handler=endpoint(set_quota),
    ),
    Operation(
        method="GET",
        path="/v1/audit",
        operation_id="listAudit",
        summary="The audit log, newest first (an owner's key: its own rows only).",
        replies=(Reply(200, "A page of rows.", AuditPage),),
        errors=(400, 401, 422, 429, 503),  # 400: a query past aiohttp's 8 KiB request line
        auth=True,
        handler=endpoint(list_audit),
        query=_QUERY,
    ),
)
