"""Settings of how the daemon runs: worker processes, bot actors, shutdown, handler code,
the state directory, and the host's place in a cluster (its id and shard leases)."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import Field, field_validator, model_validator

from config.sections.base import Section


def default_state_dir(config_file: Path | None, environ: Mapping[str, str]) -> tuple[Path, str]:
    """Where state lives when `state.dir` is not set, and why (for the CLI's one line)."""
    if environ.get("STATE_DIRECTORY"):  # systemd: the first of StateDirectory=
        return Path(environ["STATE_DIRECTORY"].split(":")[0]), "$STATE_DIRECTORY (systemd)"
    if config_file is not None:
        return config_file.absolute().parent / ".botvisor", f"beside {config_file}"
    xdg = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")) / ".local/state")
    why = "$XDG_STATE_HOME" if environ.get("XDG_STATE_HOME") else "~/.local/state"
    return Path(xdg).expanduser() / "botvisor", f"{why}, no config file"


#: a worker's drain may run this far past shutdown.grace_s before it stops waiting
DRAIN_OVERRUN_S: Final = 3.0
#: what a worker may spend after its drain: its services' stop (≤ 3 s), the context
#: store's close (≤ 11 s when PostgreSQL is slow: replay 1 s, flush 5 s, tasks 5 s) and
#: its pools (≤ 1 s each); see supervisor/worker/process.py
WORKER_TEARDOWN_S: Final = 17.0


class WorkersSection(Section):
    count: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="Worker processes (default: number of CPUs).",
    )
    shards: int = Field(64, ge=1, le=65_536, description="Shards per deployment; fixed.")
    heartbeat_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often each worker writes its heartbeat."
    )
    heartbeat_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A worker silent this long is hung and is killed."
    )
    boot_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="A worker not ready this long after spawn is killed."
    )
    restart_max: int = Field(
        5, ge=1, le=1000, description="Restarts allowed within restart_within_s."
    )
    restart_within_s: float = Field(
        60.0, gt=0, le=86_400, description="Window of the restart intensity."
    )
    reconcile_interval_s: float = Field(
        5.0, gt=0, le=3600, description="Registry re-read period; bounds a lost hint's delay."
    )
    reconcile_full_interval_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="Safety full pass (compares every row, decrypts none it need not); "
        "the passes between read only rows changed since the last one.",
    )
    standby: bool = Field(
        True,
        description="Keep one spare worker process started with its imports done (~70 MB) "
        "that takes over a dead worker's shards at once: its bots poll again ~1 s sooner.",
    )


class ShutdownSection(Section):
    grace_s: float = Field(
        10.0, gt=0, le=3600, description="SIGTERM: time in-flight handlers get to finish."
    )

    @property
    def drain_cutoff_s(self) -> float:
        """A worker gives up on its drain (and says what was left) this long after SIGTERM."""
        return self.grace_s + DRAIN_OVERRUN_S

    @property
    def kill_after_s(self) -> float:
        """The master SIGKILLs a draining worker only past its drain cutoff plus what the
        worker may spend after it (context store flushed to PostgreSQL, pools closed)."""
        return self.drain_cutoff_s + WORKER_TEARDOWN_S + 1.0


class BotsSection(Section):
    inflight_max: int = Field(
        200, ge=1, le=100_000, description="Unfinished updates per bot before polling pauses."
    )
    queued_max_worker: int = Field(
        20_000,
        ge=1,
        le=10_000_000,
        description="Updates received and not yet handled across all bots of one worker; "
        "past it polls wait for room (Telegram keeps the updates), nothing is dropped.",
    )
    spawn_concurrency: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Bot handshakes (getMe, or opening the poll connection when the "
        "username is known) run at once when a worker boots.",
    )
    backoff_min_s: float = Field(0.5, gt=0, le=3600, description="First actor restart delay.")
    backoff_max_s: float = Field(30.0, gt=0, le=86_400, description="Longest restart delay.")
    inbox: bool = Field(
        True,
        description="Durable inbox: polled updates go to a per-shard Redis Stream and are "
        "confirmed to Telegram at once, handled from the stream (no head-of-line blocking "
        "behind a slow chat). Off: updates are confirmed only once handled.",
    )
    inbox_backlog_max: int = Field(
        50_000,
        ge=1,
        le=10_000_000,
        description="Unhandled inbox entries per shard before that shard's bots pause "
        "polling (Telegram keeps the updates), nothing is dropped.",
    )
    inbox_claim_idle_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Inbox entries pending this long (a dead or moved worker's) are claimed "
        "and handled by the shard's owner; longer than any handler runs.",
    )


class HandlersSection(Section):
    paths: list[Path] = Field(
        default_factory=list,
        description="Directories added to the front of sys.path (in workers, the master "
        "and CLI runs) before a handler reference `package.module:attr` is imported, e.g. "
        '["/srv/bots"]. Relative paths are relative to the working directory. In the '
        "environment, separated like PYTHONPATH: BOTVISOR_HANDLERS__PATHS=/srv/bots:/opt/more.",
    )

    @field_validator("paths", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p]
        return value


#: a host id: letters, digits, dot, dash, underscore (a Kubernetes pod name fits)
HOST_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class HostSection(Section):
    id: str = Field(
        default_factory=socket.gethostname,
        description="This host's id in the cluster (default: the hostname). Hosts sharing "
        "one PostgreSQL and Redis must have different ids; one master runs per id. "
        "1-63 of letters, digits, '.', '-', '_' (a Kubernetes pod name fits).",
    )

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not HOST_ID_RE.match(value):
            raise ValueError(
                "must be 1-63 letters, digits, '.', '-' or '_', starting with a letter or digit"
            )
        return value


class LeasesSection(Section):
    ttl_s: float = Field(
        10.0,
        ge=1,
        le=600,
        description="Shard lease lifetime in PostgreSQL: a dead host's shards move to the "
        "others this long after its last renewal.",
    )
    renew_s: float = Field(
        1.0,
        gt=0,
        le=300,
        description="How often a host renews its leases (and rebalances). Must be below "
        "ttl_s - margin_s, so several renewals can fail before the host fences itself.",
    )
    margin_s: float = Field(
        3.0,
        gt=0,
        le=300,
        description="Safety margin: a host stops a shard's bots this long before the "
        "lease could expire by its own clock (covers clock rate drift and slow stops).",
    )

    @model_validator(mode="after")
    def _renew_before_fence(self) -> LeasesSection:
        if self.renew_s >= self.ttl_s - self.margin_s:
            raise ValueError(
                f"leases.renew_s ({self.renew_s:g}) must be below leases.ttl_s - "
                f"leases.margin_s ({self.ttl_s:g} - {self.margin_s:g})"
            )
        return self


class StateSection(Section):
    dir: Path = Field(
        default_factory=lambda: default_state_dir(None, os.environ)[0],
        description="State directory: embedded servers, key file, metrics files. Unset: "
        "$STATE_DIRECTORY (systemd's StateDirectory=, /var/lib/botvisor), else `.botvisor` "
        "beside the config file, else $XDG_STATE_HOME/botvisor (~/.local/state/botvisor). "
        "A relative path in the config file is relative to that file.",
    )
