"""Which owner a Telegram user speaks for: table `owner_telegram_users` (migration 0002).

Runs in a worker, for the manager bot. A link remembers the owner's key hash at /login
and counts only while the owner still has that key, so replacing a leaked key also
unlinks every Telegram account that logged in with it. Every query has a timeout.
"""

from __future__ import annotations

import asyncpg


class OwnerLinks:
    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    async def link(self, user_id: int, owner_id: int) -> str | None:
        """Link (or re-link) the user to the owner; the owner's name, None if it is gone."""
        value = await self._pool.fetchval(
            "WITH o AS (SELECT id, name, api_key_hash FROM owners"
            "  WHERE id = $2 AND api_key_hash IS NOT NULL),"
            " ins AS (INSERT INTO owner_telegram_users (user_id, owner_id, key_hash)"
            "  SELECT $1, id, api_key_hash FROM o"
            "  ON CONFLICT (user_id) DO UPDATE SET owner_id = EXCLUDED.owner_id,"
            "  key_hash = EXCLUDED.key_hash, created_at = now() RETURNING owner_id)"
            " SELECT o.name FROM o JOIN ins ON ins.owner_id = o.id",
            user_id,
            owner_id,
            timeout=self._timeout,
        )
        return None if value is None else str(value)

    async def owner_of(self, user_id: int) -> int | None:
        value = await self._pool.fetchval(
            "SELECT l.owner_id FROM owner_telegram_users l"
            " JOIN owners o ON o.id = l.owner_id AND o.api_key_hash = l.key_hash"
            " WHERE l.user_id = $1",
            user_id,
            timeout=self._timeout,
        )
        return None if value is None else int(value)

    async def unlink(self, user_id: int) -> bool:
        status = await self._pool.execute(
            "DELETE FROM owner_telegram_users WHERE user_id = $1",
            user_id,
            timeout=self._timeout,
        )
        return str(status).endswith(" 1")
