"""Pages other features add to the dashboard: list a `(Dashboard) -> None` here.

Each one runs once at start, before the dashboard is mounted, e.g.::

    def broadcast_pages(dashboard: Dashboard) -> None:
        dashboard.add_template_dir(Path(__file__).parent / "templates")
        dashboard.add_page("GET", "/broadcasts", broadcasts_view)
        dashboard.add_nav_entry("Broadcasts", "/ui/broadcasts")

Views get `(request, session)`; `session.caller` is whom the browser speaks for, to pass
to the service layer (owner isolation comes from there, as in the admin API).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from supervisor.http.dashboard import audit_views, broadcast_views

if TYPE_CHECKING:
    from supervisor.http.dashboard.app import Dashboard

_ID: Final = "{id:[0-9]{1,19}}"
_BROADCAST: Final = f"/bots/{_ID}/broadcasts/{{broadcast:[0-9]{{1,19}}}}"


def broadcast_pages(dashboard: Dashboard) -> None:
    """A bot's broadcasts: form and list, progress (live), cancel (broadcast_views.py)."""
    add = dashboard.add_page
    add("GET", f"/bots/{_ID}/broadcasts", broadcast_views.broadcasts_page)
    add("POST", f"/bots/{_ID}/broadcasts", broadcast_views.start_broadcast)
    add("GET", _BROADCAST, broadcast_views.broadcast_page)
    add("POST", _BROADCAST + "/cancel", broadcast_views.cancel_broadcast)
    add("GET", "/live" + _BROADCAST, broadcast_views.live_broadcast)


def audit_pages(dashboard: Dashboard) -> None:
    """The audit log (audit_views.py); the owner's quota usage is on the bots page."""
    dashboard.add_page("GET", "/audit", audit_views.audit_page)
    dashboard.add_nav_entry("Audit log", "/ui/audit")


EXTENSIONS: tuple[Callable[[Dashboard], Any], ...] = (broadcast_pages, audit_pages)
