"""The `chats` table: every chat a bot has seen, the audience of its broadcasts.

Runs in any process with a pool. Writers batch: `record_chats` is one statement for
any number of chats (the worker's chat recorder calls it once per flush interval).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

#: One statement for a whole batch. The join drops chats of bots removed meanwhile (their
#: rows would violate the foreign key and fail the batch forever). last_seen only moves
#: forward; `blocked` is the newest news (see SeenChat).
_UPSERT = """
INSERT INTO chats AS c (bot_id, chat_id, type, title, first_seen, last_seen, blocked)
SELECT u.bot_id, u.chat_id, u.type, u.title, u.seen, u.seen, u.blocked
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[],
            $6::boolean[]) AS u(bot_id, chat_id, type, title, seen, blocked)
JOIN bots b ON b.id = u.bot_id
ON CONFLICT (bot_id, chat_id) DO UPDATE SET
    type = excluded.type,
    title = coalesce(excluded.title, c.title),
    last_seen = greatest(c.last_seen, excluded.last_seen),
    blocked = CASE WHEN excluded.last_seen >= c.last_seen THEN excluded.blocked
                   ELSE c.blocked END
"""


class SeenChat(NamedTuple):
    """What one flush knows about a chat, from its newest update. Every update says
    whether the bot can write there: a message, an edit or a button press means yes, a
    my_chat_member "kicked" (a private chat: the user blocked the bot) means no. A
    NamedTuple: one is built per update, and a frozen dataclass costs several times more."""

    bot_id: int
    chat_id: int
    type: str
    title: str | None
    seen: float  # unix time of the newest update from it
    blocked: bool


async def record_chats(pool: asyncpg.Pool, chats: Sequence[SeenChat], timeout: float) -> None:
    """Upsert `chats` in one statement. Raises on a PostgreSQL failure (the caller keeps
    the batch and retries)."""
    if not chats:
        return
    from datetime import UTC, datetime

    async with asyncio.timeout(timeout):
        await pool.execute(
            _UPSERT,
            [c.bot_id for c in chats],
            [c.chat_id for c in chats],
            [c.type for c in chats],
            [c.title for c in chats],
            [datetime.fromtimestamp(c.seen, UTC) for c in chats],
            [c.blocked for c in chats],
        )


async def audience(pool: asyncpg.Pool, bot_id: int, timeout: float) -> int:
    """Chats of the bot a broadcast would go to (seen, not blocked)."""
    async with asyncio.timeout(timeout):
        n = await pool.fetchval(
            "SELECT count(*) FROM chats WHERE bot_id = $1 AND NOT blocked", bot_id
        )
    return int(n or 0)
