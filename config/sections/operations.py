"""Settings of what operators see and use: the HTTP server (health, metrics, admin API),
the dashboard, metrics labels and the log."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.sections.base import Section


class HttpSection(Section):
    host: str = Field("127.0.0.1", description="Address of health, metrics and admin API.")
    port: int = Field(8080, ge=0, le=65_535, description="Port; 0 picks a free one.")
    idle_timeout_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description=(
            "A connection that sends no complete request head within this time (of "
            "connecting, or of its last response) is closed."
        ),
    )
    max_connections: int = Field(
        256, ge=1, le=65_536, description="Open connections at most; more are closed at once."
    )


class DashboardSection(Section):
    enabled: bool = Field(
        True,
        description="Serve the owners' dashboard under /ui on the HTTP port (login with an "
        "owner's API key or security.admin_key); read at start. Workers then also send "
        "per-bot figures (at most 10,000 bots each) in a heartbeat every poll_interval_s.",
    )
    session_ttl_s: float = Field(
        8 * 3600.0,
        ge=60,
        le=30 * 86_400,
        description="A dashboard login lasts this long, then the browser must log in again. "
        "Sessions live in the master's memory: a master restart logs everyone out.",
    )
    max_sessions: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Dashboard sessions kept at most; past it the oldest is logged out.",
    )
    secure_cookies: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Mark the session cookie `Secure`: `auto` when the request came over "
        "TLS, `always` behind a TLS-terminating proxy (the usual production setup), "
        "`never` only for plain-HTTP tests.",
    )
    page_size: int = Field(50, ge=5, le=500, description="Bots per page of the bots list.")
    poll_interval_s: float = Field(
        5.0,
        ge=0.2,
        le=60,
        description="How often open pages fetch live figures (while the tab is visible), "
        "and how often workers send their per-bot figures to the master.",
    )


class MetricsSection(Section):
    per_bot_labels: bool = Field(False, description="Label metrics by bot id (many series).")


class LogSection(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: readable on a TTY, JSON otherwise."
    )
