"""`POST /v1/upgrade` and `GET /v1/upgrade`: the rolling code upgrade, admin key only.

Runs in the master's event loop. POST calls the same `RollingUpgrade.request` as SIGUSR2
and `botvisor upgrade` (supervisor/master/upgrade.py): 202 with the new upgrade's
progress, or 409 with the running one's. GET reads the progress of the last upgrade.
"""

from __future__ import annotations

from typing import Final

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from supervisor.http.auth import caller_of
from supervisor.http.common import ApiError, error_response, json_response
from supervisor.http.models import ErrorDetail
from supervisor.http.openapi import Operation, Reply
from supervisor.master.upgrade import RollingUpgrade
from supervisor.master.upgrade_status import UpgradePhase, UpgradeStatus

UPGRADE_KEY: Final = web.AppKey("upgrade", RollingUpgrade)


class UpgradeProgress(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int = Field(description="Counts the upgrades since the master started; 0: none yet.")
    phase: UpgradePhase = Field(
        description="idle, waiting (for a worker-count change), starting (the replacement "
        "boots), handing_over (the old worker stops its bots), taking_over (the new one "
        "starts them), done or failed."
    )
    worker: int | None = Field(description="The worker being replaced now.")
    workers_replaced: int
    workers_total: int
    started: str | None = Field(description="ISO 8601, UTC.")
    finished: str | None = Field(description="ISO 8601, UTC; null while it runs.")
    error: str | None = Field(description="Why it failed (phase `failed`).")
    requested_by: str | None = Field(description="SIGUSR2, botvisor upgrade or api.")
    summary: str = Field(description="One line for people.")

    @classmethod
    def of(cls, status: UpgradeStatus) -> UpgradeProgress:
        return cls.model_validate(status.to_json())


class UpgradeConflict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    error: ErrorDetail
    upgrade: UpgradeProgress


async def _admin_only(request: web.Request) -> RollingUpgrade:
    try:
        caller = await caller_of(request)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        # an owner key is looked up in PostgreSQL
        raise ApiError(503, "unavailable", "PostgreSQL did not answer in time; try again") from None
    if not caller.admin:
        raise ApiError(403, "admin_only", "upgrading the workers takes security.admin_key")
    return request.app[UPGRADE_KEY]


async def start_upgrade(request: web.Request) -> web.Response:
    try:
        upgrade = await _admin_only(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, **exc.headers)
    accepted, status = upgrade.request("api")
    progress = UpgradeProgress.of(status)
    if accepted:
        return json_response(progress.model_dump(mode="json"), 202, Location="/v1/upgrade")
    conflict = UpgradeConflict(
        error=ErrorDetail(
            code="upgrade_running",
            message="an upgrade runs already; follow it with GET /v1/upgrade"
            if status.running
            else "the master is draining; no upgrade now",
        ),
        upgrade=progress,
    )
    return json_response(conflict.model_dump(mode="json"), 409)


async def get_upgrade(request: web.Request) -> web.Response:
    try:
        upgrade = await _admin_only(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, **exc.headers)
    return json_response(UpgradeProgress.of(upgrade.status()).model_dump(mode="json"))


UPGRADE_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path="/v1/upgrade",
        operation_id="startUpgrade",
        summary="Replace the workers one at a time with fresh interpreters (new handler "
        "code), handing each one's shards over without a double poll or a lost update. "
        "Admin key only; same as SIGUSR2 and `botvisor upgrade`.",
        replies=(
            Reply(202, "Started; follow it with GET /v1/upgrade.", UpgradeProgress),
            Reply(
                409,
                "An upgrade runs already (its progress), or the master drains.",
                UpgradeConflict,
            ),
        ),
        errors=(401, 403, 429, 503),
        auth=True,
        handler=start_upgrade,
    ),
    Operation(
        method="GET",
        path="/v1/upgrade",
        operation_id="getUpgrade",
        summary="Progress of the running or last upgrade. Admin key only.",
        replies=(Reply(200, "Progress.", UpgradeProgress),),
        errors=(401, 403, 429, 503),
        auth=True,
        handler=get_upgrade,
    ),
)
