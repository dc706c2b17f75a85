"""The registry's read-only queries of the `bots` table beyond one bot or one owner's list:
what a worker runs (`desired`), the webhook ingress's secrets, `bots move-api`'s token, and
the figures and pages of the status endpoint and the dashboard. A part of `Registry`
(supervisor/registry/bots.py).

Runs in any process with a pool; every query has a timeout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from bots.actor.spec import BotSpec
from bots.telegram.token import BotToken
from supervisor.registry.bot_records import COLUMNS, BotRecord, BotState, record_of
from supervisor.registry.tokenbox import TokenBox, TokenDecryptError


class BotQueries:
    """`Registry` sets the pool, the keyring and the timeout."""

    _pool: asyncpg.Pool
    _box: TokenBox
    _timeout: float
    #: bot ids whose stored token did not decrypt at the last `desired()`
    undecryptable: list[int]

    async def webhook_secrets(self, bot_ids: Sequence[int]) -> dict[int, str]:
        """The secret_token of each of these bots that is in webhook mode (the ingress's
        lookup; a paused bot's updates wait in its stream until it resumes); a secret that
        does not decrypt is left out (its bot gets 401s)."""
        rows = await self._pool.fetch(
            "SELECT id, webhook_key_id, webhook_secret FROM bots WHERE id = ANY($1::bigint[])"
            " AND mode = 'webhook' AND webhook_secret IS NOT NULL",
            list(bot_ids),
            timeout=self._timeout,
        )
        out: dict[int, str] = {}
        for r in rows:
            try:
                out[r["id"]] = self._box.open_secret(
                    r["id"], r["webhook_secret"], r["webhook_key_id"]
                )
            except TokenDecryptError:
                continue
        return out

    async def counts_by_state(self) -> dict[str, int]:
        rows = await self._pool.fetch(
            "SELECT state, count(*) AS n FROM bots GROUP BY state", timeout=self._timeout
        )
        counts = {str(s): 0 for s in BotState}
        counts.update({r["state"]: int(r["n"]) for r in rows})
        return counts

    async def token_of(self, bot_id: int) -> BotToken | None:
        """One bot's decrypted token whatever its state (`bots move-api` calls logOut/close
        with it). Raises TokenDecryptError when its key is gone."""
        row = await self._pool.fetchrow(
            "SELECT key_id, token_encrypted FROM bots WHERE id = $1", bot_id, timeout=self._timeout
        )
        if row is None:
            return None
        return self._box.decrypt(bot_id, row["token_encrypted"], row["key_id"])

    async def desired(self, shards: Sequence[int], total_shards: int) -> dict[int, BotSpec]:
        """Active bots of these shards, tokens decrypted. A row that fails to decrypt is
        reported by bot id in `undecryptable` and left out, never crashing the worker."""
        rows = await self._pool.fetch(
            "SELECT id, key_id, token_encrypted, handler, settings, revision FROM bots"
            " WHERE state = 'active' AND (id % $1) = ANY($2::int[])",
            total_shards,
            list(shards),
            timeout=self._timeout,
        )
        out: dict[int, BotSpec] = {}
        self.undecryptable = []
        for r in rows:
            try:
                token = self._box.decrypt(r["id"], r["token_encrypted"], r["key_id"])
            except TokenDecryptError:
                self.undecryptable.append(r["id"])
                continue
            settings = r["settings"]
            if isinstance(settings, str):
                settings = json.loads(settings)
            out[r["id"]] = BotSpec(r["id"], token, r["handler"], settings, r["revision"])
        return out

    async def search(
        self, owner_id: int | None, query: str, offset: int, limit: int
    ) -> tuple[int, list[BotRecord]]:
        """One page of bots by id (of `owner_id` when given) whose username contains
        `query` or whose id starts with it, and how many match in all. Two queries on
        one connection: a window count would read every matching row's settings."""
        where = (
            " WHERE ($1::bigint IS NULL OR owner_id = $1)"
            " AND ($2 = '' OR username ILIKE $3 OR ($4 <> '' AND id::text LIKE $4))"
        )
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args = (
            owner_id,
            query,
            f"%{escaped}%",
            query + "%" if query.isascii() and query.isdigit() else "",
        )
        async with self._pool.acquire(timeout=self._timeout) as conn:
            total = await conn.fetchval(
                "SELECT count(*) FROM bots" + where, *args, timeout=self._timeout
            )
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM bots{where} ORDER BY id OFFSET $5 LIMIT $6",
                *args,
                offset,
                limit,
                timeout=self._timeout,
            )
        return int(total), [record_of(r) for r in rows]

    async def states_of(
        self, owner_id: int | None, bot_ids: Sequence[int]
    ) -> dict[int, tuple[BotState, str | None]]:
        """(state, disabled reason) of those of `bot_ids` that exist (and are `owner_id`'s)."""
        rows = await self._pool.fetch(
            "SELECT id, state, disabled_reason FROM bots WHERE id = ANY($1::bigint[])"
            " AND ($2::bigint IS NULL OR owner_id = $2)",
            list(bot_ids),
            owner_id,
            timeout=self._timeout,
        )
        return {r["id"]: (BotState(r["state"]), r["disabled_reason"]) for r in rows}

    async def owner_of_bots(self) -> dict[int, int | None]:
        """Every bot id -> its owner id (the dashboard's per-owner figures)."""
        rows = await self._pool.fetch("SELECT id, owner_id FROM bots", timeout=self._timeout)
        return {r["id"]: r["owner_id"] for r in rows}

    async def counts_by_owner(self) -> dict[int | None, dict[str, int]]:
        """Bots per owner (None: the admin's own) and state."""
        rows = await self._pool.fetch(
            "SELECT owner_id, state, count(*) AS n FROM bots GROUP BY owner_id, state",
            timeout=self._timeout,
        )
        out: dict[int | None, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["owner_id"], {str(s): 0 for s in BotState})[r["state"]] = int(r["n"])
        return out
