"""The owners' pages: the bots list, one bot, adding a bot, actions, handoffs.

Runs in the master's event loop. Every read and change goes through BotService with the
session's caller, exactly as the admin API does, so an owner sees and changes only its
own bots and another owner's bot is the same 404 page as one that does not exist.
"""

from __future__ import annotations

import math
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from bots.handlers.registry import HANDLERS
from context import release_chat
from supervisor.http.dashboard import broadcast_views, forms
from supervisor.http.dashboard.live import LiveFigures
from supervisor.http.dashboard.pages import PAGES_KEY, PREFIX, Pages, path_int, read_form
from supervisor.http.dashboard.quota_usage import quota_usage
from supervisor.http.dashboard.sessions import Session
from supervisor.registry.bot_records import BotRecord, BotState
from supervisor.registry.bot_service import BotService
from supervisor.registry.bot_service_errors import BotServiceError

LIVE_KEY: Final = web.AppKey("dashboard_live", LiveFigures)
_LIVE_IDS_MAX: Final = 500
_HANDOFFS_SHOWN: Final = 100


def _pages(request: web.Request) -> Pages:
    return request.app[PAGES_KEY]


def _service(request: web.Request) -> BotService:
    return _pages(request).service(request)


def _see(path: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(path)


# -- bots -------------------------------------------------------------------------------


def mode_of(record: BotRecord) -> str:
    """How the bot gets its updates (a template global). Long polling is the only update
    source the workers run; a webhook mode would be told apart here."""
    return "long polling"


def _row(record: BotRecord, live: dict[str, Any]) -> dict[str, Any]:
    return {"bot": record, "live": live, "state": _state_text(record, live)}


def _state_text(record: BotRecord, live: dict[str, Any]) -> str:
    return state_text(record.state, live)


def state_text(state: BotState, live: dict[str, Any]) -> str:
    """One word for the list: the registry's state, or the actor's while it is active."""
    if state is not BotState.ACTIVE:
        return str(state)
    return live.get("live_state") or "waiting for a worker"


async def bots_page(request: web.Request, session: Session) -> web.StreamResponse:
    pages = _pages(request)
    size = pages.ctx.settings.dashboard.page_size
    query = request.query.get("q", "")[:64]
    try:
        page = max(1, int(request.query.get("page", "1")))
    except ValueError:
        page = 1
    total, records = await _service(request).search(
        session.caller, query, offset=(page - 1) * size, limit=size
    )
    live = request.app[LIVE_KEY]
    pages_total = max(1, math.ceil(total / size))

    def link(n: int) -> str:
        return f"{PREFIX}/bots?" + urlencode({"q": query, "page": n} if query else {"page": n})

    return pages.render(
        request,
        "bots.html",
        session,
        rows=[_row(r, live.bot(r.id)) for r in records],
        query=query,
        total=total,
        page=page,
        pages_total=pages_total,
        prev_link=link(page - 1) if page > 1 else None,
        next_link=link(page + 1) if page < pages_total else None,
        usage=await quota_usage(pages.ctx, session.caller),
    )


async def bot_page(request: web.Request, session: Session, **extra: Any) -> web.StreamResponse:
    pages = _pages(request)
    bot_id = path_int(request, "id")
    record = await _service(request).get(session.caller, bot_id)
    live = request.app[LIVE_KEY].bot(bot_id, series=True)
    handoffs: list[dict[str, Any]] = []
    handoff_error = None
    store = pages.ctx.context
    if store is None:
        handoff_error = "Conversation contexts are not available on this master."
    else:
        try:
            chats = await store.handed_off_chats(bot_id, _HANDOFFS_SHOWN)
            handoffs = [{"chat_id": c, "mark": m, "stamp": t} for c, m, t in chats]
        except (OSError, TimeoutError) as exc:
            handoff_error = f"PostgreSQL did not answer ({type(exc).__name__})."
    settings = dict(record.settings)
    own = [f for f in forms.OWN_FIELDS if record.handler == "openai"]
    values = {
        "handler": record.handler,
        "settings": forms.settings_text(settings, tuple(own)),
        **{f: str(settings.get(f, "")) for f in own},
    }
    values.update(extra.pop("values", {}))
    return pages.render(
        request,
        "bot.html",
        session,
        bot=record,
        row=_row(record, live),
        live=live,
        own_fields=own,
        values=values,
        handoffs=handoffs,
        handoff_error=handoff_error,
        broadcasts=await broadcast_views.newest(request, session, bot_id),
        errors=extra.pop("errors", {}),
        status=extra.pop("status", 200),
        notice=request.query.get("done"),
    )


async def new_bot_form(
    request: web.Request, session: Session, status: int = 200, **extra: Any
) -> web.StreamResponse:
    return _pages(request).render(
        request,
        "new_bot.html",
        session,
        status,
        handlers=sorted(HANDLERS),
        values=extra.get("values", {"handler": "echo", "settings": ""}),
        errors=extra.get("errors", {}),
    )


async def new_bot(request: web.Request, session: Session) -> web.StreamResponse:
    form = await read_form(request)
    # the token is never put back in the form: after an error it is typed again
    values = {k: form.get(k, "") for k in ("handler", "settings", "owner")}
    try:
        settings = forms.parse_settings(values["settings"])
        record = await _service(request).register(
            session.caller,
            form.get("token", "").strip(),
            handler=values["handler"].strip() or "echo",
            settings=settings,
            owner=(values["owner"].strip() or None) if session.caller.admin else None,
        )
    except (BotServiceError, forms.FormError) as exc:
        errors = forms.errors_of(exc)
        return await new_bot_form(request, session, 422, values=values, errors=errors)
    raise _see(f"{PREFIX}/bots/{record.id}?done=added")


async def bot_action(request: web.Request, session: Session) -> web.StreamResponse:
    bot_id = path_int(request, "id")
    action = request.match_info["action"]
    svc = _service(request)
    match action:
        case "pause":
            await svc.pause(session.caller, bot_id)
        case "resume":
            await svc.resume(session.caller, bot_id)
        case "remove":
            await svc.remove(session.caller, bot_id)
            raise _see(f"{PREFIX}/bots?done=removed")
        case _:
            raise web.HTTPNotFound()
    raise _see(f"{PREFIX}/bots/{bot_id}?done={action}d")


async def bot_settings(request: web.Request, session: Session) -> web.StreamResponse:
    bot_id = path_int(request, "id")
    form = await read_form(request)
    svc = _service(request)
    current = await svc.get(session.caller, bot_id)  # another owner's bot: 404 first
    own = {f: form[f] for f in forms.OWN_FIELDS if f in form and current.handler == "openai"}
    handler = form.get("handler", "").strip() or current.handler
    try:
        settings = forms.parse_settings(form.get("settings", ""), own)
        await svc.update(
            session.caller,
            bot_id,
            handler=None if handler == current.handler else handler,
            settings=settings,
        )
    except (BotServiceError, forms.FormError) as exc:
        if isinstance(exc, BotServiceError) and exc.code == "not_found":
            raise
        values = {"handler": handler, "settings": form.get("settings", ""), **own}
        return await bot_page(
            request, session, values=values, errors=forms.errors_of(exc), status=422
        )
    raise _see(f"{PREFIX}/bots/{bot_id}?done=saved")


async def chat_release(request: web.Request, session: Session) -> web.StreamResponse:
    """End an operator handoff (the same release as the API and `botvisor chats release`)."""
    bot_id = path_int(request, "id")
    chat_id = path_int(request, "chat", -(2**63))
    await _service(request).get(session.caller, bot_id)  # another owner's bot: 404
    store = _pages(request).ctx.context
    if store is None:
        return _pages(request).error_page(
            request, 503, "Conversation contexts are not available here.", session
        )
    released = await release_chat(store, bot_id, chat_id)
    _pages(request).record(
        request,
        session.caller,
        "chat.release",
        f"bot:{bot_id}/chat:{chat_id}",
        outcome="ok" if released else "not_handed_off",
    )
    raise _see(f"{PREFIX}/bots/{bot_id}?done={'released' if released else 'not-handed-off'}")


# -- live figures (polled by static/live.js) --------------------------------------------


async def live_bots(request: web.Request, session: Session) -> web.StreamResponse:
    """Figures of the listed bots the caller may see; others are left out silently."""
    raw = request.query.get("ids", "")
    ids = [int(x) for x in raw.split(",")[:_LIVE_IDS_MAX] if x.isascii() and x.isdigit()]
    ids = [i for i in ids if 0 < i < 2**63]
    states = await _service(request).states(session.caller, ids)
    live = request.app[LIVE_KEY]
    out = []
    for bot_id in ids:
        if bot_id in states:
            state, reason = states[bot_id]
            figures = live.bot(bot_id, series=True)
            out.append({**figures, "state_text": state_text(state, figures), "reason": reason})
    return web.json_response({"bots": out})


async def live_bot(request: web.Request, session: Session) -> web.StreamResponse:
    bot_id = path_int(request, "id")
    record = await _service(request).get(session.caller, bot_id)
    live = request.app[LIVE_KEY].bot(bot_id, series=True)
    return web.json_response({**live, "state_text": _state_text(record, live)})
