"""A bot's broadcasts in the dashboard: the form (with a dry run), the recent list, a
progress page that static/live.js refreshes, and cancel.

Runs in the master's event loop. Every call goes through BroadcastService with the
session's caller (the code the API and `botvisor broadcast` run), so another owner's
bot or broadcast is the same 404 page as one that does not exist, and starts and
cancels are recorded in the audit log there (source `dashboard:<ip>`).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError

from supervisor.http.dashboard.forms import FormError
from supervisor.http.dashboard.pages import (
    PAGES_KEY,
    PREFIX,
    Pages,
    path_int,
    read_form,
    source_of,
)
from supervisor.http.dashboard.sessions import Session
from supervisor.registry.bot_service_errors import BotServiceError, ErrorKind
from supervisor.registry.broadcast_records import ACTIVE, BroadcastRecord
from supervisor.registry.broadcast_service import BroadcastService, NewBroadcast

_RECENT: Final = 20
#: broadcasts listed on the bot's own page
_ON_BOT_PAGE: Final = 5
_PARSE_MODES: Final = ("", "HTML", "MarkdownV2", "Markdown")
_FIELDS: Final = ("text", "parse_mode", "buttons")
_BUTTON_LINES_MAX: Final = 10
_MAX_INT64: Final = 2**63 - 1


def _pages(request: web.Request) -> Pages:
    return request.app[PAGES_KEY]


def _service(request: web.Request) -> BroadcastService:
    ctx = _pages(request).ctx
    return BroadcastService(ctx.registry, ctx.settings, audit=ctx.audit, source=source_of(request))


def _broadcast_id(request: web.Request) -> int:
    """The path's broadcast id; one beyond int64 is the 404 of any unknown broadcast."""
    bot_id, value = request.match_info["id"], int(request.match_info["broadcast"])
    if not 1 <= value <= _MAX_INT64:
        raise BotServiceError(
            ErrorKind.NOT_FOUND, "not_found", f"broadcast {value} of bot {bot_id} does not exist"
        )
    return value


def figures(record: BroadcastRecord) -> dict[str, Any]:
    """What the progress page shows, as text; also the live JSON (same field names)."""
    return {
        "id": record.id,
        "state": str(record.state),
        "active": record.state in ACTIVE,
        "total": record.total,
        "sent": record.sent,
        "failed": record.failed,
        "blocked": record.blocked,
        "unknown": record.unknown,
        "remaining": record.remaining,
        "rate": f"{record.rate:.1f}/s",
        "eta": "—" if record.eta_s is None else f"{record.eta_s:.0f} s",
    }


def parse_buttons(text: str) -> list[list[dict[str, str]]]:
    """The buttons textarea: one link button per line, `Label | https://…`; each its row."""
    rows = []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > _BUTTON_LINES_MAX:
        raise FormError("buttons", f"buttons: at most {_BUTTON_LINES_MAX} lines")
    for n, line in enumerate(lines, 1):
        label, bar, url = line.rpartition("|")
        if not bar or not label.strip() or not url.strip():
            raise FormError("buttons", f"buttons: line {n}: write it as `Label | https://…`")
        rows.append([{"text": label.strip(), "url": url.strip()}])
    return rows


def message_of(form: dict[str, str]) -> NewBroadcast:
    """The form as the API's model; FormError names the field that is wrong."""
    parse_mode = form.get("parse_mode", "")
    if parse_mode not in _PARSE_MODES:
        raise FormError("parse_mode", "parse mode: choose none, HTML, MarkdownV2 or Markdown")
    try:
        return NewBroadcast.model_validate(
            {
                "text": form.get("text", ""),
                "parse_mode": parse_mode or None,
                "buttons": parse_buttons(form.get("buttons", "")),
                # only the Start button sends: a submission without it (Enter, a script's
                # form.submit()) counts the audience, never messages thousands by accident
                "dry_run": "start" not in form,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        field = str(loc[0]) if loc and loc[0] in _FIELDS else ""
        where = f" (line {int(loc[1]) + 1})" if field == "buttons" and len(loc) > 1 else ""
        name = field.replace("_", " ") or "message"
        raise FormError(field, f"{name}{where}: {first['msg']}") from None


async def newest(request: web.Request, session: Session, bot_id: int) -> list[dict[str, Any]]:
    """The bot page's few newest broadcasts (the bot is checked there already)."""
    records = await _service(request).recent(session.caller, bot_id, _ON_BOT_PAGE)
    return [figures(r) for r in records]


async def broadcasts_page(
    request: web.Request, session: Session, status: int = 200, **extra: Any
) -> web.StreamResponse:
    pages = _pages(request)
    bot_id = path_int(request, "id")
    record = await pages.service(request).get(session.caller, bot_id)  # others' bot: 404
    recent = await _service(request).recent(session.caller, bot_id, _RECENT)
    return pages.render(
        request,
        "broadcasts.html",
        session,
        status,
        bot=record,
        recent=[figures(r) | {"created_at": r.created_at} for r in recent],
        parse_modes=_PARSE_MODES,
        values=extra.get("values", {"text": "", "parse_mode": "", "buttons": ""}),
        errors=extra.get("errors", {}),
        audience=extra.get("audience"),
    )


async def start_broadcast(request: web.Request, session: Session) -> web.StreamResponse:
    bot_id = path_int(request, "id")
    form = await read_form(request)
    values = {k: form.get(k, "") for k in _FIELDS}
    svc = _service(request)
    try:
        message = message_of(form)
    except FormError as exc:  # the page checks the bot first: another owner's is a 404
        errors = {exc.field: exc.message}
        return await broadcasts_page(request, session, 422, values=values, errors=errors)
    if message.dry_run:
        count = await svc.audience(session.caller, bot_id)
        return await broadcasts_page(request, session, values=values, audience=count)
    record = await svc.start(session.caller, bot_id, message)
    raise web.HTTPSeeOther(f"{PREFIX}/bots/{bot_id}/broadcasts/{record.id}")


async def broadcast_page(request: web.Request, session: Session) -> web.StreamResponse:
    pages = _pages(request)
    bot_id = path_int(request, "id")
    record = await pages.service(request).get(session.caller, bot_id)
    broadcast = await _service(request).progress(session.caller, bot_id, _broadcast_id(request))
    return pages.render(
        request,
        "broadcast.html",
        session,
        bot=record,
        broadcast=broadcast,
        fig=figures(broadcast),
        notice=request.query.get("done"),
    )


async def live_broadcast(request: web.Request, session: Session) -> web.StreamResponse:
    bot_id = path_int(request, "id")
    record = await _service(request).progress(session.caller, bot_id, _broadcast_id(request))
    return web.json_response(figures(record))


async def cancel_broadcast(request: web.Request, session: Session) -> web.StreamResponse:
    bot_id = path_int(request, "id")
    broadcast_id = _broadcast_id(request)
    await _service(request).cancel(session.caller, bot_id, broadcast_id)
    raise web.HTTPSeeOther(f"{PREFIX}/bots/{bot_id}/broadcasts/{broadcast_id}?done=cancelled")
