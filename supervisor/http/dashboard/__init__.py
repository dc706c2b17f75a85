"""The owners' dashboard under /ui: server-rendered pages (Jinja2), a little plain
JavaScript for live figures, sessions in the master's memory, CSRF on every form."""

from supervisor.http.dashboard.app import Dashboard, mount_dashboard

__all__ = ["Dashboard", "mount_dashboard"]
