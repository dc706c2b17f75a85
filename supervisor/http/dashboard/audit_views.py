"""The audit log in the dashboard: newest first, filtered by since/action, paged.

Runs in the master's event loop. The same query as `GET /v1/audit` and `botvisor audit`
(supervisor/registry/audit.py): an owner sees the rows of its own owner, the admin all.
Pages go backwards by row id (`before`), so new rows never shift a page being read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from supervisor.http.dashboard.pages import PAGES_KEY, PREFIX, Pages
from supervisor.http.dashboard.sessions import Session
from supervisor.registry.audit import parse_since

_TEXT_MAX: Final = 100
_MAX_INT64: Final = 2**63 - 1


def _pages(request: web.Request) -> Pages:
    return request.app[PAGES_KEY]


def _filters(request: web.Request) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """(the form's values, errors by field, query arguments) from the query string."""
    values = {k: request.query.get(k, "").strip()[:_TEXT_MAX] for k in ("since", "action")}
    errors: dict[str, str] = {}
    args: dict[str, Any] = {"action": values["action"].replace("\x00", "") or None}
    since: datetime | None = None
    if values["since"]:
        try:
            since = parse_since(values["since"])
        except (ValueError, OverflowError) as exc:
            errors["since"] = str(exc)
    args["since"] = since
    raw = request.query.get("before", "")
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and 0 < int(raw) <= _MAX_INT64:
        args["before"] = int(raw)
    return values, errors, args


async def audit_page(request: web.Request, session: Session) -> web.StreamResponse:
    pages = _pages(request)
    audit = pages.ctx.audit
    values, errors, args = _filters(request)
    if audit is None:
        return pages.error_page(request, 503, "The audit log is not available here.", session)
    size = pages.ctx.settings.dashboard.page_size
    rows = []
    if not errors:
        await audit.flush(1.0)  # this process's queued rows (e.g. this login) are shown too
        rows = await audit.query(owner_id=session.caller.scope, limit=size, **args)
    next_link = None
    if len(rows) == size:
        query = {k: v for k, v in values.items() if v} | {"before": str(rows[-1].id)}
        next_link = f"{PREFIX}/audit?" + urlencode(query)
    first_link = f"{PREFIX}/audit?" + urlencode({k: v for k, v in values.items() if v})
    return pages.render(
        request,
        "audit.html",
        session,
        422 if errors else 200,
        rows=rows,
        values=values,
        errors=errors,
        next_link=next_link,
        first_link=first_link if "before" in args else None,
    )
