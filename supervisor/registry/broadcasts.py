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
The statements of a step are in supervisor/registry/broadcast_claims.py, the row types in
supervisor/registry/broadcast_records.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from supervisor.registry.broadcast_claims import (
    claim,
    mark_unknown,
    record_outcomes,
    release_lease,
)
from supervisor.registry.broadcast_records import (
    ACTIVE,
    COLUMNS,
    BroadcastRecord,
    Outcomes,
    Step,
    record_of,
)


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
                WHERE bot_id = $1 AND NOT blocked RETURNING {COLUMNS}""",
                bot_id,
                text,
                parse_mode,
                markup,
            )
        return record_of(row)

    async def get(self, bot_id: int, broadcast_id: int) -> BroadcastRecord | None:
        async with asyncio.timeout(self._timeout):
            row = await self._pool.fetchrow(
                f"SELECT {COLUMNS} FROM broadcasts WHERE id = $1 AND bot_id = $2",
                broadcast_id,
                bot_id,
            )
        return None if row is None else record_of(row)

    async def recent(self, bot_id: int, limit: int = 50) -> list[BroadcastRecord]:
        """The bot's newest broadcasts first."""
        async with asyncio.timeout(self._timeout):
            rows = await self._pool.fetch(
                f"SELECT {COLUMNS} FROM broadcasts WHERE bot_id = $1 ORDER BY id DESC LIMIT $2",
                bot_id,
                limit,
            )
        return [record_of(r) for r in rows]

    async def cancel(self, bot_id: int, broadcast_id: int) -> BroadcastRecord | None:
        """Stop it: its sender stops at its next step (within about a second). A finished
        broadcast is left as it is. None: no such broadcast of this bot."""
        async with asyncio.timeout(self._timeout):
            row = await self._pool.fetchrow(
                f"""UPDATE broadcasts SET state = 'cancelled', updated_at = now(),
                    finished_at = coalesce(finished_at, now())
                WHERE id = $1 AND bot_id = $2 AND state IN ('pending', 'running')
                RETURNING {COLUMNS}""",
                broadcast_id,
                bot_id,
            )
        if row is None:
            return await self.get(bot_id, broadcast_id)
        return record_of(row)

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
                    await record_outcomes(conn, broadcast_id, row["bot_id"], outcomes)
                if row["state"] not in ACTIVE:
                    return Step([], row["state"])  # `release` writes the last outcomes
                if not ours:
                    await mark_unknown(conn, broadcast_id)
                return await claim(conn, broadcast_id, row, runner, batch, lease_s, rate)

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
                await record_outcomes(conn, broadcast_id, row["bot_id"], outcomes)
                await release_lease(conn, broadcast_id, runner)
