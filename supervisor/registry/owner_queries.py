"""The registry's queries of the `owners` table (a part of `Registry`, supervisor/registry/bots.py).

Runs in any process with a pool; every query has a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


class OwnerExists(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"an owner named {name!r} already exists")
        self.name = name


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """A row of `owners` without its key hash, and how many bots it has."""

    id: int
    name: str
    bots: int
    created_at: datetime


class OwnerQueries:
    """Owners and their key hashes; `Registry` sets the pool and the timeout."""

    _pool: asyncpg.Pool
    _timeout: float

    async def add_owner(self, name: str, api_key_hash: bytes) -> OwnerRecord:
        row = await self._pool.fetchrow(
            "INSERT INTO owners (name, api_key_hash) VALUES ($1, $2)"
            " ON CONFLICT (name) DO NOTHING RETURNING id, name, created_at",
            name,
            api_key_hash,
            timeout=self._timeout,
        )
        if row is None:
            raise OwnerExists(name)
        return OwnerRecord(row["id"], row["name"], 0, row["created_at"])

    async def owners(self) -> list[OwnerRecord]:
        rows = await self._pool.fetch(
            "SELECT o.id, o.name, o.created_at, count(b.id) AS bots FROM owners o"
            " LEFT JOIN bots b ON b.owner_id = o.id GROUP BY o.id ORDER BY o.id",
            timeout=self._timeout,
        )
        return [OwnerRecord(r["id"], r["name"], int(r["bots"]), r["created_at"]) for r in rows]

    async def owner(self, owner_id: int) -> OwnerRecord | None:
        row = await self._pool.fetchrow(
            "SELECT o.id, o.name, o.created_at, count(b.id) AS bots FROM owners o"
            " LEFT JOIN bots b ON b.owner_id = o.id WHERE o.id = $1 GROUP BY o.id",
            owner_id,
            timeout=self._timeout,
        )
        return (
            None
            if row is None
            else OwnerRecord(row["id"], row["name"], int(row["bots"]), row["created_at"])
        )

    async def owner_id_by_name(self, name: str) -> int | None:
        value = await self._pool.fetchval(
            "SELECT id FROM owners WHERE name = $1", name, timeout=self._timeout
        )
        return None if value is None else int(value)

    async def owner_name(self, owner_id: int) -> str | None:
        value = await self._pool.fetchval(
            "SELECT name FROM owners WHERE id = $1", owner_id, timeout=self._timeout
        )
        return None if value is None else str(value)

    async def owner_key_hash(self, owner_id: int) -> bytes | None:
        value = await self._pool.fetchval(
            "SELECT api_key_hash FROM owners WHERE id = $1", owner_id, timeout=self._timeout
        )
        return None if value is None else bytes(value)
