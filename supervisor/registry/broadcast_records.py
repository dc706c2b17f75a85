"""What the `broadcasts` table's rows are as the API, the CLI and the worker's sender read
them, and what a sender reports and is told at each step (supervisor/registry/broadcasts.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
import orjson


class BroadcastState(StrEnum):
    #: created; no worker has picked it up yet
    PENDING = "pending"
    #: a worker is sending it (or will resume it)
    RUNNING = "running"
    #: every chat was tried
    DONE = "done"
    #: stopped on request; chats not yet claimed are never sent
    CANCELLED = "cancelled"


ACTIVE = (BroadcastState.PENDING, BroadcastState.RUNNING)


class Outcome(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    #: 403 blocked/deactivated/kicked: the chat is marked blocked and skipped next time
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class BroadcastRecord:
    id: int
    bot_id: int
    state: BroadcastState
    text: str
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    total: int
    sent: int
    failed: int
    blocked: int
    unknown: int
    rate: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def remaining(self) -> int:
        if self.state not in ACTIVE:
            return 0
        return max(0, self.total - self.sent - self.failed - self.blocked - self.unknown)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; None when not running or no rate yet."""
        if self.state is not BroadcastState.RUNNING or self.rate <= 0:
            return None
        return round(self.remaining / self.rate, 1)

    def message(self) -> dict[str, Any]:
        """sendMessage's parameters besides chat_id."""
        params: dict[str, Any] = {"text": self.text}
        if self.parse_mode:
            params["parse_mode"] = self.parse_mode
        if self.reply_markup:
            params["reply_markup"] = self.reply_markup
        return params


def record_of(row: asyncpg.Record) -> BroadcastRecord:
    markup = row["reply_markup"]
    return BroadcastRecord(
        id=row["id"],
        bot_id=row["bot_id"],
        state=BroadcastState(row["state"]),
        text=row["text"],
        parse_mode=row["parse_mode"],
        reply_markup=orjson.loads(markup) if isinstance(markup, str) else markup,
        total=row["total"],
        sent=row["sent"],
        failed=row["failed"],
        blocked=row["blocked"],
        unknown=row["unknown"],
        rate=row["rate"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


#: the columns `record_of` reads
COLUMNS = (
    "id, bot_id, state, text, parse_mode, reply_markup, total, sent, failed, blocked, "
    "unknown, rate, created_at, started_at, finished_at"
)


@dataclass(slots=True)
class Outcomes:
    """What a sender learnt since its last step: chat id -> outcome, and the claims it
    never tried (given back, so a resumed sender sends them)."""

    done: dict[int, Outcome] = field(default_factory=dict)
    untried: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.done)


@dataclass(frozen=True, slots=True)
class Step:
    """What a sender does next: send to `claimed` (maybe none yet), or stop (`stop`
    says why: "done", "cancelled", "held by another worker", "deleted")."""

    claimed: list[int]
    stop: str = ""
