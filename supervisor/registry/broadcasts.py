"""The `broadcasts` and `broadcast_deliveries` tables: what the API, the CLI and the
worker's sender (supervisor/worker/broadcaster.py) read and write.

Runs in any process with a pool; every query has a timeout.

Delivery record and its boundary (at most once per chat): a chat's row in
`broadcast_deliveries` is committed as `claimed` *before* its sendMessage, in the same
transaction that advances the cursor and renews the sender's lease (`step`). Outcomes
(`sent`, `failed`, `blocked`) are written by the next `step`, about a second later. A
sender that stops cleanly writes its outcomes and deletes the claims it never tried, so
those chats are sent by whoever resumes. A sender that dies (SIGKILL) leaves up to
`broadcasts.batch_max` claims without an outcome; the next sender marks them `unknown`
and does not send them again. So no chat ever receives a broadcast twice, and a kill
costs at most one batch of chats that may have missed it (`unknown` in the progress).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
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


def _record(row: asyncpg.Record) -> BroadcastRecord:
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


_COLUMNS = (
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


class BroadcastStore:
    def __init__(self, pool: asyncpg.Pool, timeout: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout

    # -- API and CLI ----------------------------------------------------------------------

    async def create(
        self,
        bot_id: int,
        text: str,
        parse_mode: str | None,
        reply_markup: Mapping[str, Any] | None,
    ) -> BroadcastRecord:
        """A pending broadcast to every chat of the bot not known to be blocked."""
        markup = orjson.dumps(reply_markup).decode() if reply_markup else None
        async with asyncio.timeout(self._timeout):
            row = await self._pool.fetchrow(
                f"""INSERT INTO broadcasts (bot_id, text, parse_mode, reply_markup, total)
                SELECT $1, $2, $3, $4::jsonb, count(*) FROM chats
                WHERE bot_id = $1 AND NOT blocked RETURNING {_COLUMNS}""",
                bot_id,
                text,
                parse_mode,
                markup,
            )
        return _record(row)

    async def get(self, bot_id: int, broadcast_id: int) -> BroadcastRecord | None:
        async with asyncio.timeout(self._timeout):
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM broadcasts WHERE id = $1 AND bot_id = $2",
                broadcast_id,
                bot_id,
            )
        return None if row is None else _record(row)

    async def recent(self, bot_id: int, limit: int = 50) -> list[BroadcastRecord]:
        """The bot's newest broadcasts first."""
        async with asyncio.timeout(self._timeout):
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM broadcasts WHERE bot_id = $1 ORDER BY id DESC LIMIT $2",
                bot_id,
                limit,
            )
        return [_record(r) for r in rows]

    async def cancel(self, bot_id: int, broadcast_id: int) -> BroadcastRecord | None:
        """Stop it: its sender stops at its next step (within about a second). A finished
        broadcast is left as it is. None: no such broadcast of this bot."""
        async with asyncio.timeout(self._timeout):
            row = await self._pool.fetchrow(
                f"""UPDATE broadcasts SET state = 'cancelled', updated_at = now(),
                    finished_at = coalesce(finished_at, now())
                WHERE id = $1 AND bot_id = $2 AND state IN ('pending', 'running')
                RETURNING {_COLUMNS}""",
                broadcast_id,
                bot_id,
            )
        if row is None:
            return await self.get(bot_id, broadcast_id)
        return _record(row)

    # -- the worker's sender --------------------------------------------------------------

    async def runnable(self) -> list[tuple[int, int]]:
        """(broadcast id, bot id) of every active broadcast no live sender holds (few rows,
        read through a partial index; the caller keeps those of its own bots)."""
        async with asyncio.timeout(self._timeout):
            rows = await self._pool.fetch(
                """SELECT id, bot_id FROM broadcasts
                WHERE state IN ('pending', 'running')
                  AND (runner IS NULL OR lease_until < now())
                ORDER BY id"""
            )
        return [(r["id"], r["bot_id"]) for r in rows]

    async def step(
        self,
        broadcast_id: int,
        runner: str,
        outcomes: Outcomes,
        *,
        batch: int,
        lease_s: float,
        rate: float | None,
    ) -> Step:
        """One round trip of a sender: record `outcomes`, renew the lease and claim the
        next `batch` chats (0: claim none, e.g. when stopping). Taking over from a dead
        sender marks its unresolved claims `unknown` first (see the module docstring)."""
        async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(
                    """SELECT bot_id, state, runner, cursor,
                        runner IS NULL OR runner = $2 OR lease_until < now() AS free
                    FROM broadcasts WHERE id = $1 FOR UPDATE""",
                    broadcast_id,
                    runner,
                )
                if row is None:
                    return Step([], "deleted")
                if not row["free"]:
                    return Step([], "held by another worker")
                ours = row["runner"] == runner
                if ours:
                    await _record_outcomes(conn, broadcast_id, row["bot_id"], outcomes)
                if row["state"] not in ACTIVE:
                    return Step([], row["state"])  # `release` writes the last outcomes
                if not ours:
                    await _mark_unknown(conn, broadcast_id)
                return await _claim(conn, broadcast_id, row, runner, batch, lease_s, rate)

    async def release(self, broadcast_id: int, runner: str, outcomes: Outcomes) -> None:
        """A sender stops (its bot stopped here, the worker drains): record what it did,
        give back its untried claims and its lease, so the next owner resumes at once."""
        async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT bot_id, runner FROM broadcasts WHERE id = $1 FOR UPDATE",
                    broadcast_id,
                )
                if row is None or row["runner"] != runner:
                    return
                await _record_outcomes(conn, broadcast_id, row["bot_id"], outcomes)
                await _release(conn, broadcast_id, runner)


async def _record_outcomes(
    conn: asyncpg.Connection, broadcast_id: int, bot_id: int, outcomes: Outcomes
) -> None:
    if outcomes.untried:
        await conn.execute(
            """DELETE FROM broadcast_deliveries
            WHERE broadcast_id = $1 AND chat_id = ANY($2::bigint[]) AND state = 'claimed'""",
            broadcast_id,
            outcomes.untried,
        )
    if not outcomes.done:
        return
    chats = list(outcomes.done)
    states = [str(o) for o in outcomes.done.values()]
    await conn.execute(
        """WITH upd AS (
            UPDATE broadcast_deliveries d SET state = o.state
            FROM unnest($2::bigint[], $3::text[]) AS o(chat_id, state)
            WHERE d.broadcast_id = $1 AND d.chat_id = o.chat_id AND d.state = 'claimed'
            RETURNING d.state)
        UPDATE broadcasts SET
            sent = sent + (SELECT count(*) FROM upd WHERE state = 'sent'),
            failed = failed + (SELECT count(*) FROM upd WHERE state = 'failed'),
            blocked = blocked + (SELECT count(*) FROM upd WHERE state = 'blocked'),
            updated_at = now()
        WHERE id = $1""",
        broadcast_id,
        chats,
        states,
    )
    blocked = [c for c, o in outcomes.done.items() if o is Outcome.BLOCKED]
    if blocked:
        await conn.execute(
            "UPDATE chats SET blocked = true WHERE bot_id = $1 AND chat_id = ANY($2::bigint[])",
            bot_id,
            blocked,
        )


async def _release(conn: asyncpg.Connection, broadcast_id: int, runner: str) -> None:
    await conn.execute(
        "UPDATE broadcasts SET runner = NULL, lease_until = NULL WHERE id = $1 AND runner = $2",
        broadcast_id,
        runner,
    )


async def _mark_unknown(conn: asyncpg.Connection, broadcast_id: int) -> None:
    """Claims a dead sender left without an outcome: in doubt, never sent again."""
    await conn.execute(
        """WITH gone AS (
            UPDATE broadcast_deliveries SET state = 'unknown'
            WHERE broadcast_id = $1 AND state = 'claimed' RETURNING 1)
        UPDATE broadcasts SET unknown = unknown + (SELECT count(*) FROM gone) WHERE id = $1""",
        broadcast_id,
    )


async def _claim(
    conn: asyncpg.Connection,
    broadcast_id: int,
    row: asyncpg.Record,
    runner: str,
    batch: int,
    lease_s: float,
    rate: float | None,
) -> Step:
    claimed: list[int] = []
    cursor = row["cursor"]
    if batch > 0:
        got = await conn.fetchrow(
            """WITH next AS (
                SELECT chat_id FROM chats WHERE bot_id = $2 AND chat_id > $3 AND NOT blocked
                ORDER BY chat_id LIMIT $4),
            ins AS (
                INSERT INTO broadcast_deliveries (broadcast_id, chat_id)
                SELECT $1, chat_id FROM next ON CONFLICT DO NOTHING RETURNING chat_id)
            SELECT (SELECT max(chat_id) FROM next) AS cursor,
                   ARRAY(SELECT chat_id FROM ins ORDER BY chat_id) AS claimed""",
            broadcast_id,
            row["bot_id"],
            cursor,
            batch,
        )
        if got["cursor"] is None:
            pending = await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM broadcast_deliveries
                WHERE broadcast_id = $1 AND state = 'claimed')""",
                broadcast_id,
            )
            if pending:  # the last claims are still being sent: done at a later step
                return await _renew(conn, broadcast_id, runner, lease_s, cursor, rate)
            # every chat was tried: done (the audience may have grown since it started)
            await conn.execute(
                """UPDATE broadcasts SET state = 'done', finished_at = now(), updated_at = now(),
                    runner = NULL, lease_until = NULL,
                    total = greatest(total, sent + failed + blocked + unknown)
                WHERE id = $1""",
                broadcast_id,
            )
            return Step([], "done")
        cursor, claimed = got["cursor"], list(got["claimed"])
    return await _renew(conn, broadcast_id, runner, lease_s, cursor, rate, claimed)


async def _renew(
    conn: asyncpg.Connection,
    broadcast_id: int,
    runner: str,
    lease_s: float,
    cursor: int,
    rate: float | None,
    claimed: list[int] | None = None,
) -> Step:
    await conn.execute(
        """UPDATE broadcasts SET runner = $2, lease_until = now() + $3 * interval '1 second',
            state = 'running', started_at = coalesce(started_at, now()), cursor = $4,
            rate = coalesce($5, rate), updated_at = now()
        WHERE id = $1""",
        broadcast_id,
        runner,
        lease_s,
        cursor,
        rate,
    )
    return Step(claimed or [])
