"""What changed in `bots` for a worker's shards: rows by change cursor, by id, or all of
them, never decrypted here (migration 0003: `bots.change_seq`, tombstones in `bots_removed`).

The caller decrypts only the tokens of bots it is about to start or restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

_ROW = (
    "id, state, key_id, token_encrypted, handler, settings, revision, change_seq, username,"
    " mode, webhook_key_id, webhook_secret, owner_id"
)
_SHARDS = "(id % $1) = ANY($2::int[])"


@dataclass(slots=True)
class BotRow:
    """A row of `bots` with its token still encrypted. Not frozen: a frozen dataclass's
    __init__ costs ~5 µs a row, 50 ms of blocked loop at 10,000 rows."""

    id: int
    active: bool
    key_id: str
    blob: bytes
    handler: str
    #: the jsonb as asyncpg returns it (text): parsed by `settings`, only for rows used
    raw_settings: Any
    revision: int
    change_seq: int
    #: from getMe at registration: lets an actor start without a getMe of its own
    username: str = ""
    #: "polling" or "webhook" (migration 0006)
    mode: str = "polling"
    #: the webhook secret_token, sealed (supervisor/registry/tokenbox.py: seal_secret)
    secret_key_id: str | None = None
    secret_blob: bytes | None = None
    #: the usage meter's answer to "whose quota?", known without a query of its own
    owner_id: int | None = None

    @property
    def settings(self) -> Mapping[str, Any]:
        raw = self.raw_settings
        parsed: Mapping[str, Any] = json.loads(raw) if isinstance(raw, str | bytes) else raw
        return parsed


@dataclass(frozen=True, slots=True)
class Changes:
    rows: list[BotRow]
    #: ids deleted from `bots` (tombstones) in these shards
    removed: list[int]
    #: the highest change_seq seen (the next cursor); the old one if nothing changed
    cursor: int


def _row(r: asyncpg.Record) -> BotRow:
    return BotRow(
        r["id"],
        r["state"] == "active",
        r["key_id"],
        r["token_encrypted"],
        r["handler"],
        r["settings"],
        r["revision"],
        r["change_seq"],
        r["username"] or "",
        r["mode"],
        r["webhook_key_id"],
        r["webhook_secret"],
        r["owner_id"],
    )


#: rows converted between two yields to the event loop
_CHUNK = 1000


async def _rows(records: list[asyncpg.Record]) -> list[BotRow]:
    out: list[BotRow] = []
    for start in range(0, len(records), _CHUNK):
        if start:
            await asyncio.sleep(0)
        out.extend(_row(r) for r in records[start : start + _CHUNK])
    return out


class ChangeFeed:
    """Read-only queries for the reconciler. Every query has a timeout."""

    def __init__(self, pool: asyncpg.Pool, timeout: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout
        #: queries run (tests and the bench count them)
        self.queries = 0

    async def cursor(self) -> int:
        """The sequence's value now: a full read after this sees everything up to it."""
        self.queries += 1
        value = await self._pool.fetchval(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM bots_change_seq",
            timeout=self._timeout,
        )
        return int(value or 0)

    async def since(self, cursor: int, shards: Sequence[int], total: int) -> Changes:
        """Rows (any state) and deletions of these shards with change_seq > cursor."""
        self.queries += 1
        async with self._pool.acquire(timeout=self._timeout) as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                rows = await conn.fetch(
                    f"SELECT {_ROW} FROM bots WHERE change_seq > $3 AND {_SHARDS}",
                    total,
                    list(shards),
                    cursor,
                    timeout=self._timeout,
                )
                gone = await conn.fetch(
                    f"SELECT id, change_seq FROM bots_removed WHERE change_seq > $3 AND {_SHARDS}",
                    total,
                    list(shards),
                    cursor,
                    timeout=self._timeout,
                )
        out = await _rows(rows)
        top = max([cursor, *(r.change_seq for r in out), *(g["change_seq"] for g in gone)])
        live = {r.id for r in out}
        return Changes(out, [g["id"] for g in gone if g["id"] not in live], top)

    async def by_ids(self, ids: Sequence[int], shards: Sequence[int], total: int) -> list[BotRow]:
        """These bots' rows (any state), those of other shards left out."""
        self.queries += 1
        rows = await self._pool.fetch(
            f"SELECT {_ROW} FROM bots WHERE id = ANY($3::bigint[]) AND {_SHARDS}",
            total,
            list(shards),
            list(ids),
            timeout=self._timeout,
        )
        return await _rows(rows)

    async def active(self, shards: Sequence[int], total: int) -> list[BotRow]:
        """Every active row of these shards (the full pass), tokens still encrypted."""
        self.queries += 1
        rows = await self._pool.fetch(
            f"SELECT {_ROW} FROM bots WHERE state = 'active' AND {_SHARDS}",
            total,
            list(shards),
            timeout=self._timeout,
        )
        return await _rows(rows)
