"""The statements of a broadcast sender's step, run inside the transaction that
BroadcastStore.step or .release holds (supervisor/registry/broadcasts.py explains the
delivery record and its at-most-once boundary).
"""

from __future__ import annotations

import asyncpg

from supervisor.registry.broadcast_records import Outcome, Outcomes, Step


async def record_outcomes(
    conn: asyncpg.Connection, broadcast_id: int, bot_id: int, outcomes: Outcomes
) -> None:
    """Write the outcomes (and the counts, and the chats found blocked); delete the claims
    given back untried."""
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


async def release_lease(conn: asyncpg.Connection, broadcast_id: int, runner: str) -> None:
    """Give back the runner's lease: the next sender may take the broadcast at once."""
    await conn.execute(
        "UPDATE broadcasts SET runner = NULL, lease_until = NULL WHERE id = $1 AND runner = $2",
        broadcast_id,
        runner,
    )


async def mark_unknown(conn: asyncpg.Connection, broadcast_id: int) -> None:
    """Claims a dead sender left without an outcome: in doubt, never sent again."""
    await conn.execute(
        """WITH gone AS (
            UPDATE broadcast_deliveries SET state = 'unknown'
            WHERE broadcast_id = $1 AND state = 'claimed' RETURNING 1)
        UPDATE broadcasts SET unknown = unknown + (SELECT count(*) FROM gone) WHERE id = $1""",
        broadcast_id,
    )


async def claim(
    conn: asyncpg.Connection,
    broadcast_id: int,
    row: asyncpg.Record,
    runner: str,
    batch: int,
    lease_s: float,
    rate: float | None,
) -> Step:
    """Claim the next `batch` chats after the cursor and renew the lease; with no chat
    left and no claim awaiting its outcome, the broadcast is done."""
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
