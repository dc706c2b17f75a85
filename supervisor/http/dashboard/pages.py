"""What every dashboard page shares: the session guard, CSRF on POST, HTML errors and
the security headers.

Runs in the master's event loop. `Pages.page(view)` wraps a view that needs a login:
no live session → 303 to the login page; a POST whose `_csrf` field does not match the
session's token → 403 before the view runs; a bot the caller may not see → the same 404
page as a bot that does not exist (BotService decides, as for the API).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import asyncpg
import jinja2
import redis.asyncio as aioredis
import structlog
from aiohttp import web

from supervisor.http.common import AdminContext
from supervisor.http.dashboard import csrf
from supervisor.http.dashboard.sessions import COOKIE, Session, SessionStore
from supervisor.registry.audit import Caller
from supervisor.registry.bot_service import BotService
from supervisor.registry.bot_service_errors import BotServiceError, ErrorKind

log = structlog.get_logger(__name__)

PREFIX: Final = "/ui"
_FORM_TIMEOUT_S: Final = 10.0
#: no inline script or style anywhere: the pages load /ui/static/* only
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: what "a service did not answer" looks like from here: a 503 page, never a 500
OUTAGES: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    aioredis.RedisError,
    OSError,
    TimeoutError,
)
_STATUS: Final = {
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.INVALID: 422,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.UPSTREAM: 502,
    ErrorKind.QUOTA: 403,
}

View = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class NavEntry:
    name: str
    path: str
    admin_only: bool = False


class Pages:
    """Templates, sessions and the guard; one per master (supervisor/http/dashboard/app.py)."""

    def __init__(self, ctx: AdminContext, env: jinja2.Environment, sessions: SessionStore) -> None:
        self.ctx = ctx
        self.env = env
        self.sessions = sessions
        self.nav: list[NavEntry] = []

    # -- rendering ----------------------------------------------------------------------

    def render(
        self,
        request: web.Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> web.Response:
        """A page; `session` None for the login and error pages of anonymous visitors."""
        nav = [
            n
            for n in self.nav
            if session is not None and (session.caller.admin or not n.admin_only)
        ]
        body = self.env.get_template(template).render(
            session=session,
            nav=nav,
            path=request.path,
            csrf_field=csrf.FIELD,
            poll_ms=int(self.ctx.settings.dashboard.poll_interval_s * 1000),
            **context,
        )
        return web.Response(text=body, status=status, content_type="text/html")

    def error_page(
        self, request: web.Request, status: int, message: str, session: Session | None = None
    ) -> web.Response:
        return self.render(request, "error.html", session, status, code=status, message=message)

    # -- the audit log ------------------------------------------------------------------

    def service(self, request: web.Request) -> BotService:
        """The bot service for one request: its changes are audited as from the dashboard."""
        return self.ctx.service(source_of(request))

    def record(
        self,
        request: web.Request,
        caller: Caller | str,
        action: str,
        target: str = "",
        *,
        outcome: str = "ok",
        owner_id: int | None = None,
    ) -> None:
        """One audit row for an action the dashboard does itself (login, logout, release);
        never blocks (supervisor/registry/audit.py)."""
        if self.ctx.audit is not None:
            self.ctx.audit.record(
                caller,
                action,
                target,
                source=source_of(request),
                outcome=outcome,
                owner_id=owner_id,
            )

    # -- sessions -----------------------------------------------------------------------

    def session_of(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def cookie_secure(self, request: web.Request) -> bool:
        mode = self.ctx.settings.dashboard.secure_cookies
        return mode == "always" or (mode == "auto" and request.secure)

    def page(self, view: View) -> Handler:
        """The guard around a view that needs a login (see the module docstring)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            session = self.session_of(request)
            if session is None:
                if request.method == "GET" and not request.path.startswith(PREFIX + "/live/"):
                    target = quote(request.path_qs, safe="")
                    raise web.HTTPSeeOther(f"{PREFIX}/login?next={target}")
                return self.error_page(request, 401, "Your session has ended; log in again.")
            if request.method == "POST":
                form = await read_form(request)
                if not csrf.matches(session.csrf, form.get(csrf.FIELD)):
                    log.warning("dashboard.csrf_rejected", path=request.path)
                    return self.error_page(
                        request,
                        403,
                        "This form is stale or was not sent by this site "
                        "(CSRF token missing or wrong). Reload the page and try again.",
                        session,
                    )
            try:
                return await view(request, session)
            except BotServiceError as exc:
                return self.error_page(request, _STATUS[exc.kind], exc.message, session)
            except OUTAGES as exc:
                log.warning("dashboard.unavailable", path=request.path, error=type(exc).__name__)
                return self.error_page(
                    request, 503, "PostgreSQL or Redis did not answer in time; try again.", session
                )

        handler.__name__ = getattr(view, "__name__", "view")
        return handler


async def read_form(request: web.Request) -> dict[str, str]:
    """The POSTed form's text fields, first value of each (aiohttp caches the parse, so a
    view reads it again for free). Files are ignored: no form here has one."""
    try:
        async with asyncio.timeout(_FORM_TIMEOUT_S):
            form = await request.post()
    except TimeoutError:
        raise web.HTTPRequestTimeout() from None
    out: dict[str, str] = {}
    for key, value in form.items():
        if isinstance(value, str) and key not in out:
            out[key] = value
    return out


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Headers on every dashboard response; aiohttp's own 4xx (unknown path, 405, 413) as
    short HTML pages, never the API's JSON."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers.update(_HEADERS)
            exc.headers["Cache-Control"] = "no-store"
            raise
        response = web.Response(
            text=f"<!doctype html><title>{exc.status}</title><p>{exc.status} {exc.reason}</p>",
            status=exc.status,
            content_type="text/html",
        )
    response.headers.update(_HEADERS)
    static = request.path.startswith(PREFIX + "/static/") and response.status == 200
    response.headers["Cache-Control"] = "public, max-age=300" if static else "no-store"
    return response


def source_of(request: web.Request) -> str:
    """Where a dashboard request comes from, as audit rows name it: `dashboard:<ip>`, so
    a row tells a click in the dashboard from a call to the API (`http:<ip>`)."""
    return f"dashboard:{request.remote or 'unknown'}"


PAGES_KEY: Final = web.AppKey("dashboard_pages", Pages)
_MAX_INT64: Final = 2**63 - 1


def path_int(request: web.Request, name: str, minimum: int = 1) -> int:
    """A path id (the route allows ASCII digits only) within int64, else the 404 page."""
    value = int(request.match_info[name])
    if not minimum <= value <= _MAX_INT64:
        raise BotServiceError(ErrorKind.NOT_FOUND, "not_found", f"bot {value} is not registered")
    return value
