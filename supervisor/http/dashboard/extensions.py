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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.http.dashboard.app import Dashboard

EXTENSIONS: tuple[Callable[[Dashboard], Any], ...] = ()
