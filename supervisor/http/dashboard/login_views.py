"""Logging in and out of the dashboard.

Runs in the master's event loop. A login trades a key for a session (sessions.py); the
login form has no session yet, so its CSRF token is a double-submit cookie (csrf.py).
Failed logins count in the admin API's per-address lockout. Logins (wrong keys too) and
logouts are recorded in the audit log (`dashboard.login`, `dashboard.logout`, source
`dashboard:<ip>`); a wrong key's actor is `unknown`, never what was typed.
"""

from __future__ import annotations

import math

import structlog
from aiohttp import web

from supervisor.http.dashboard import csrf
from supervisor.http.dashboard.pages import PAGES_KEY, PREFIX, Pages, read_form
from supervisor.http.dashboard.sessions import COOKIE, LOGIN_COOKIE, Session
from supervisor.registry.owners import Caller, authenticate

log = structlog.get_logger(__name__)


def _pages(request: web.Request) -> Pages:
    return request.app[PAGES_KEY]


def _see(path: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(path)


async def login_form(request: web.Request) -> web.StreamResponse:
    pages = _pages(request)
    if pages.session_of(request) is not None:
        raise _see(_next(request))
    return _login_page(request, pages, 200, None)


def _login_page(request: web.Request, pages: Pages, status: int, error: str | None) -> web.Response:
    token = csrf.new_token()
    response = pages.render(
        request, "login.html", None, status, login_csrf=token, error=error, next=_next(request)
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        path=PREFIX,
        httponly=True,
        samesite="Strict",
        secure=pages.cookie_secure(request),
    )
    return response


def _next(request: web.Request) -> str:
    """Where to go after login: a path of ours only (never an open redirect)."""
    target = request.query.get("next", "")
    if target.startswith(PREFIX + "/") and "//" not in target and "\\" not in target:
        return target
    return PREFIX + "/bots"


async def login(request: web.Request) -> web.StreamResponse:
    """Trade a key for a session. Failures count in the same per-address lockout as the
    admin API's, so the dashboard is no faster way to guess keys."""
    pages = _pages(request)
    form = await read_form(request)
    if not csrf.matches(request.cookies.get(LOGIN_COOKIE), form.get(csrf.FIELD)):
        log.warning("dashboard.csrf_rejected", path=request.path)
        return pages.error_page(
            request,
            403,
            "The login form is stale (CSRF token missing "
            "or wrong). Reload the login page and try again.",
        )
    ctx = pages.ctx
    source = request.remote or "unknown"
    wait = ctx.lockout.retry_after(source)
    if wait > 0:
        response = _login_page(
            request,
            pages,
            429,
            f"Too many failed logins from this address; try again in {math.ceil(wait)} s.",
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        # not an audit row: refused before any key is checked, and a row per request
        # would let whoever hammers a locked address fill the table
        return response
    caller = await authenticate(ctx.registry, ctx.settings, form.get("key", "").strip())
    if caller is None:
        failures, locked_s = ctx.lockout.failed(source)
        log.warning("dashboard.login_failed", source=source, failures=failures, locked_s=locked_s)
        pages.record(request, "unknown", "dashboard.login", outcome="bad_key")
        return _login_page(request, pages, 401, "That is not an owner's API key nor the admin key.")
    label = "admin"
    if caller.owner_id is not None:
        label = await ctx.registry.owner_name(caller.owner_id) or f"owner {caller.owner_id}"
    pages.sessions.sweep()
    session_id, _ = pages.sessions.create(caller, label)
    log.info("dashboard.login", owner_id=caller.owner_id, admin=caller.admin, source=source)
    pages.record(request, caller, "dashboard.login", _actor_target(caller))
    response = web.HTTPSeeOther(_next(request))
    response.set_cookie(
        COOKIE,
        session_id,
        path=PREFIX,
        max_age=int(pages.sessions.ttl_s),
        httponly=True,
        samesite="Strict",
        secure=pages.cookie_secure(request),
    )
    response.del_cookie(LOGIN_COOKIE, path=PREFIX)
    raise response


async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    pages = _pages(request)
    pages.sessions.end(request.cookies.get(COOKIE))
    pages.record(request, session.caller, "dashboard.logout", _actor_target(session.caller))
    response = web.HTTPSeeOther(PREFIX + "/login")
    response.del_cookie(COOKIE, path=PREFIX)
    raise response


def _actor_target(caller: Caller) -> str:
    return "admin" if caller.admin else f"owner:{caller.owner_id}"


async def home(request: web.Request) -> web.StreamResponse:
    raise _see(PREFIX + "/bots")
