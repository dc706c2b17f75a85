"""The dashboard as an aiohttp sub-application under /ui, and its extension hook.

Runs in the master's event loop. `mount_dashboard(app, admin, master)` adds it to the
master's app (supervisor/http/app.py). Other features (broadcasts, the audit log, …)
add pages behind the same login, CSRF check and headers without touching these views:
a function `(Dashboard) -> None` listed in supervisor/http/dashboard/extensions.py
(the master's app passes that list here) calls `add_nav_entry` / `add_page` /
`add_template_dir`; it runs before the sub-application is mounted (aiohttp freezes its
routes then).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import jinja2
from aiohttp import web

from supervisor.http.common import AdminContext
from supervisor.http.dashboard import fleet_views, login_views, views
from supervisor.http.dashboard.live import LiveFigures
from supervisor.http.dashboard.pages import (
    PAGES_KEY,
    PREFIX,
    NavEntry,
    Pages,
    View,
    security_headers,
)
from supervisor.http.dashboard.sessions import SessionStore
from supervisor.master.arbiter import Master

Extension = Callable[["Dashboard"], object]

_HERE: Final = Path(__file__).parent
_ID: Final = "{id:[0-9]{1,19}}"  # [0-9], not \d: \d also matches other scripts' digits


class Dashboard:
    """One per master: the sub-application, its sessions and its live figures."""

    def __init__(self, admin: AdminContext, master: Master) -> None:
        cfg = admin.settings.dashboard
        self._template_dirs: list[Path] = [_HERE / "templates"]
        self._loader = jinja2.FileSystemLoader(self._template_dirs)
        env = jinja2.Environment(
            loader=self._loader,
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["ago"] = _ago
        env.globals["mode_of"] = views.mode_of
        self.pages = Pages(admin, env, SessionStore(cfg.session_ttl_s, cfg.max_sessions))
        self.live = LiveFigures(stale_after_s=admin.settings.workers.heartbeat_timeout_s)
        master.beat_listeners.append(self.live.on_beat)
        self.app = web.Application(middlewares=[security_headers])
        self.app[PAGES_KEY] = self.pages
        self.app[views.LIVE_KEY] = self.live
        self.app[fleet_views.FLEET_LIVE_KEY] = self.live
        self.app[fleet_views.MASTER_KEY] = master
        self._routes()
        self.add_nav_entry("Bots", PREFIX + "/bots")
        self.add_nav_entry("Add a bot", PREFIX + "/bots/new")
        self.add_nav_entry("Fleet", PREFIX + "/fleet", admin_only=True)

    # -- the extension hook -------------------------------------------------------------

    def add_nav_entry(self, name: str, path: str, *, admin_only: bool = False) -> None:
        """A link in every page's navigation (after the built-in ones)."""
        self.pages.nav.append(NavEntry(name, path, admin_only))

    def add_page(self, method: str, path: str, view: View) -> None:
        """A view behind the login, under /ui (`path` is relative: "/broadcasts"). POSTs
        are CSRF-checked before `view` runs; render with `dashboard.pages.render(request,
        "x.html", session, **ctx)` from a template dir added with add_template_dir."""
        self.app.router.add_route(method, path, self.pages.page(view))

    def add_template_dir(self, directory: Path) -> None:
        """Templates of an extension; they may `{% extends "base.html" %}`."""
        self._template_dirs.append(directory)
        self._loader.searchpath = [str(d) for d in self._template_dirs]

    # -- built-in pages -------------------------------------------------------------------

    def _routes(self) -> None:
        r, page = self.app.router, self.pages.page
        r.add_get("", login_views.home)
        r.add_get("/", login_views.home)
        r.add_get("/login", login_views.login_form)
        r.add_post("/login", login_views.login)
        r.add_post("/logout", page(login_views.logout))
        r.add_get("/bots", page(views.bots_page))
        r.add_get("/bots/new", page(views.new_bot_form))
        r.add_post("/bots/new", page(views.new_bot))
        r.add_get(f"/bots/{_ID}", page(views.bot_page))
        r.add_post(f"/bots/{_ID}/{{action:pause|resume|remove}}", page(views.bot_action))
        r.add_post(f"/bots/{_ID}/settings", page(views.bot_settings))
        r.add_post(f"/bots/{_ID}/chats/{{chat:-?[0-9]{{1,19}}}}/release", page(views.chat_release))
        r.add_get("/live/bots", page(views.live_bots))
        r.add_get(f"/live/bots/{_ID}", page(views.live_bot))
        r.add_get("/fleet", page(fleet_views.fleet_page))
        r.add_get("/live/fleet", page(fleet_views.live_fleet))
        r.add_static("/static", _HERE / "static", append_version=False)


def _ago(wall: float | None) -> str:
    """ "12 s ago" for a wall-clock time; "never" for none."""
    import time

    if not wall:
        return "never"
    seconds = max(0, int(time.time() - wall))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def mount_dashboard(
    app: web.Application,
    admin: AdminContext,
    master: Master,
    extensions: Iterable[Extension] = (),
) -> Dashboard:
    """Serve the dashboard under /ui of the master's app, with its extensions' pages."""
    dashboard = Dashboard(admin, master)
    for extend in extensions:
        extend(dashboard)
    app.add_subapp(PREFIX, dashboard.app)
    return dashboard
