"""The bot registry: PostgreSQL table `bots`, the desired state every worker converges to."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from bots.actor import BotSpec
from bots.token import BotToken
from supervisor.tokenbox import TokenBox, TokenDecryptError


class BotState(StrEnum):
    """Values of the `bots.state` column."""

    #: should be polling
    ACTIVE = "active"
    #: kept, but not polling (owner's choice)
    PAUSED = "paused"
    #: Telegram rejected the token; `disabled_reason` says why
    DISABLED = "disabled"


class AlreadyRegistered(Exception):
    def __init__(self, bot_id: int) -> None:
        super().__init__(f"bot {bot_id} is already registered")
        self.bot_id = bot_id


@dataclass(frozen=True, slots=True)
class BotRecord:
    """A row of `bots` without its token."""

    id: int
    owner_id: int | None
    username: str
    handler: str
    settings: Mapping[str, Any]
    state: BotState
    disabled_reason: str | None
    revision: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner_id": self.owner_id,
            "username": self.username,
            "token": f"{self.id}:***",
            "handler": self.handler,
            "settings": dict(self.settings),
            "state": str(self.state),
            "disabled_reason": self.disabled_reason,
            "revision": self.revision,
        }


_COLUMNS = "id, owner_id, username, handler, settings, state, disabled_reason, revision"


def _record(row: asyncpg.Record) -> BotRecord:
    settings = row["settings"]
    if isinstance(settings, str):
        settings = json.loads(settings)
    return BotRecord(
        id=row["id"],
        owner_id=row["owner_id"],
        username=row["username"],
        handler=row["handler"],
        settings=settings,
        state=BotState(row["state"]),
        disabled_reason=row["disabled_reason"],
        revision=row["revision"],
    )


class Registry:
    """Runs in any process with a pool (master, worker, CLI). Every query has a timeout."""

    def __init__(self, pool: asyncpg.Pool, box: TokenBox, timeout: float = 10.0) -> None:
        self._pool = pool
        self._box = box
        self._timeout = timeout
        #: bot ids whose stored token did not decrypt at the last `desired()`
        self.undecryptable: list[int] = []

    async def add(
        self,
        token: BotToken,
        *,
        username: str = "",
        handler: str = "echo",
        settings: Mapping[str, Any] | None = None,
        owner_id: int | None = None,
    ) -> BotRecord:
        row = await self._pool.fetchrow(
            "INSERT INTO bots (id, owner_id, username, token_encrypted, key_id, handler, settings)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (id) DO NOTHING"
            f" RETURNING {_COLUMNS}",
            token.bot_id,
            owner_id,
            username,
            self._box.encrypt(token),
            self._box.key_id,
            handler,
            json.dumps(dict(settings or {})),
            timeout=self._timeout,
        )
        if row is None:
            raise AlreadyRegistered(token.bot_id)
        return _record(row)

    async def add_many(self, items: Sequence[tuple[BotToken, str]], handler: str = "echo") -> int:
        """Bulk insert (token, username) pairs; existing bots are skipped. Returns rows added."""
        rows = [(t.bot_id, u, self._box.encrypt(t), self._box.key_id, handler) for t, u in items]
        async with self._pool.acquire(timeout=self._timeout) as conn:
            before = await conn.fetchval("SELECT count(*) FROM bots", timeout=self._timeout)
            await conn.executemany(
                "INSERT INTO bots (id, username, token_encrypted, key_id, handler)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                rows,
                timeout=self._timeout * 10,
            )
            after = await conn.fetchval("SELECT count(*) FROM bots", timeout=self._timeout)
        return int(after - before)

    async def get(self, bot_id: int) -> BotRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM bots WHERE id = $1", bot_id, timeout=self._timeout
        )
        return None if row is None else _record(row)

    async def list(self, owner_id: int | None = None) -> list[BotRecord]:
        if owner_id is None:
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM bots ORDER BY id", timeout=self._timeout
            )
        else:
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM bots WHERE owner_id = $1 ORDER BY id",
                owner_id,
                timeout=self._timeout,
            )
        return [_record(r) for r in rows]

    async def remove(self, bot_id: int) -> bool:
        status = await self._pool.execute(
            "DELETE FROM bots WHERE id = $1", bot_id, timeout=self._timeout
        )
        return status.endswith(" 1")

    async def set_state(self, bot_id: int, state: BotState, reason: str | None = None) -> bool:
        status = await self._pool.execute(
            "UPDATE bots SET state = $2, disabled_reason = $3, revision = revision + 1,"
            " updated_at = now() WHERE id = $1",
            bot_id,
            str(state),
            reason,
            timeout=self._timeout,
        )
        return status.endswith(" 1")

    async def counts_by_state(self) -> dict[str, int]:
        rows = await self._pool.fetch(
            "SELECT state, count(*) AS n FROM bots GROUP BY state", timeout=self._timeout
        )
        counts = {str(s): 0 for s in BotState}
        counts.update({r["state"]: int(r["n"]) for r in rows})
        return counts

    async def desired(self, shards: Sequence[int], total_shards: int) -> dict[int, BotSpec]:
        """Active bots of these shards, tokens decrypted. A row that fails to decrypt is
        reported by bot id in `undecryptable` and left out, never crashing the worker."""
        rows = await self._pool.fetch(
            "SELECT id, token_encrypted, handler, settings, revision FROM bots"
            " WHERE state = 'active' AND (id % $1) = ANY($2::int[])",
            total_shards,
            list(shards),
            timeout=self._timeout,
        )
        out: dict[int, BotSpec] = {}
        self.undecryptable = []
        for r in rows:
            try:
                token = self._box.decrypt(r["id"], r["token_encrypted"])
            except TokenDecryptError:
                self.undecryptable.append(r["id"])
                continue
            settings = r["settings"]
            if isinstance(settings, str):
                settings = json.loads(settings)
            out[r["id"]] = BotSpec(r["id"], token, r["handler"], settings, r["revision"])
        return out
