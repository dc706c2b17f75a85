"""Fakes for the reconciler: a worker host, a fleet and a change feed in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bots.actor.spec import BotSpec
from bots.telegram.token import BotToken
from supervisor.registry.changes import BotRow, Changes
from supervisor.worker.plan import Plan


class FakeFleet:
    def __init__(self) -> None:
        self.specs: dict[int, BotSpec] = {}
        self.plans: list[Plan] = []
        self.handles = self.specs

    def running_specs(self) -> dict[int, BotSpec]:
        return dict(self.specs)

    async def wait_progress_saved(self, within_s: float) -> bool:
        return True

    async def apply(self, plan: Plan) -> None:
        self.plans.append(plan)
        for bot_id in plan.stop:
            self.specs.pop(bot_id, None)
        for spec in [*plan.start, *plan.restart, *plan.retune]:
            self.specs[spec.bot_id] = spec


@dataclass
class FakeHost:
    settings: Any
    shards: list[int]
    fleet: FakeFleet = field(default_factory=FakeFleet)
    warm: list[int] = field(default_factory=list)
    epoch: int = -1
    state: str = "booting"
    desired: int = 0
    exit_status: int = 0
    _assigned_epoch: int = 0
    _drain: asyncio.Event = field(default_factory=asyncio.Event)
    _reconcile_now: asyncio.Event = field(default_factory=asyncio.Event)
    _log: Any = field(default_factory=lambda: structlog.get_logger("test"))
    heartbeats: int = 0

    async def _write_heartbeat(self) -> None:
        self.heartbeats += 1


class FakeFeed:
    """The `bots` table as a dict, with the same change cursor semantics as migration 0003."""

    def __init__(self, total_shards: int) -> None:
        self.total = total_shards
        self.rows: dict[int, BotRow] = {}
        self.removed: dict[int, int] = {}
        self.seq = 0
        self.calls: list[str] = []
        self.queries = 0

    def put(self, bot_id: int, *, active: bool = True, revision: int = 1, **kw: Any) -> None:
        self.seq += 1
        old = self.rows.get(bot_id)
        blob = kw.get("blob", old.blob if old else f"blob-{bot_id}".encode())
        self.rows[bot_id] = BotRow(
            bot_id,
            active,
            "k",
            blob,
            kw.get("handler", "echo"),
            kw.get("settings", {}),
            revision,
            self.seq,
        )
        self.removed.pop(bot_id, None)

    def delete(self, bot_id: int) -> None:
        self.seq += 1
        del self.rows[bot_id]
        self.removed[bot_id] = self.seq

    def _mine(self, bot_id: int, shards: Sequence[int]) -> bool:
        return bot_id % self.total in shards

    async def cursor(self) -> int:
        self.calls.append("cursor")
        return self.seq

    async def since(self, cursor: int, shards: Sequence[int], total: int) -> Changes:
        self.calls.append("since")
        rows = [r for r in self.rows.values() if r.change_seq > cursor and self._mine(r.id, shards)]
        gone = [b for b, s in self.removed.items() if s > cursor and self._mine(b, shards)]
        top = max([cursor, *(r.change_seq for r in rows), *(self.removed[b] for b in gone)])
        return Changes(rows, gone, top)

    async def by_ids(self, ids: Sequence[int], shards: Sequence[int], total: int) -> list[BotRow]:
        self.calls.append(f"by_ids:{sorted(ids)}")
        return [self.rows[b] for b in ids if b in self.rows and self._mine(b, shards)]

    async def active(self, shards: Sequence[int], total: int) -> list[BotRow]:
        self.calls.append("active")
        return [r for r in self.rows.values() if r.active and self._mine(r.id, shards)]


class CountingDecrypt:
    def __init__(self) -> None:
        self.ids: list[int] = []

    def __call__(self, bot_id: int, blob: bytes, key_id: str) -> BotToken:
        self.ids.append(bot_id)
        return BotToken(f"{bot_id}:{blob.decode().ljust(35, 'x')[:35]}")
