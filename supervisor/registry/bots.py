"""The bot registry: PostgreSQL table `bots`, the desired state every worker converges to.

`Registry` writes and reads bots here; its other queries are in bot_queries.py (workers,
ingress, dashboard) and owner_queries.py (owners), its row types in bot_records.py.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from bots.telegram.token import BotToken
from supervisor.registry.audit import AuditEntry, audited
from supervisor.registry.bot_queries import BotQueries
from supervisor.registry.bot_records import (
    COLUMNS,
    AlreadyRegistered,
    BotMode,
    BotRecord,
    BotState,
    OwnerBotsQuota,
    record_of,
)
from supervisor.registry.owner_queries import OwnerQueries
from supervisor.registry.tokenbox import TokenBox

if TYPE_CHECKING:
    from supervisor.registry.keyrotation import KeyRotation

#: first key of the advisory lock that serialises one owner's registrations (quota count)
_OWNER_LOCK = 0x626F7471  # "botq"


class Registry(BotQueries, OwnerQueries):
    """Runs in any process with a pool (master, worker, CLI). Every query has a timeout."""

    def __init__(self, pool: asyncpg.Pool, box: TokenBox, timeout: float = 10.0) -> None:
        self._pool = pool
        self._box = box
        self._timeout = timeout
        #: bot ids whose stored token did not decrypt at the last `desired()`
        self.undecryptable: list[int] = []

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool, for stores of other tables (chats, broadcasts) in the same process."""
        return self._pool

    async def add(
        self,
        token: BotToken,
        *,
        username: str = "",
        handler: str = "echo",
        settings: Mapping[str, Any] | None = None,
        owner_id: int | None = None,
        max_owner_bots: int = 0,
        audit: AuditEntry | None = None,
    ) -> BotRecord:
        """Insert the bot; `audit` is written by the same statement. With `max_owner_bots`
        (> 0) and an owner, raises OwnerBotsQuota when the owner has that many already:
        counted under a per-owner transaction lock, so concurrent adds cannot overshoot."""
        sql, args = audited(
            "INSERT INTO bots (id, owner_id, username, key_id, token_encrypted, handler, settings)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (id) DO NOTHING"
            f" RETURNING {COLUMNS}",
            [
                token.bot_id,
                owner_id,
                username,
                *self._box.seal(token),
                handler,
                json.dumps(dict(settings or {})),
            ],
            audit,
        )
        async with self._pool.acquire(timeout=self._timeout) as conn, conn.transaction():
            if max_owner_bots > 0 and owner_id is not None:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    _OWNER_LOCK,
                    owner_id % 2**31,
                    timeout=self._timeout,
                )
                count = await conn.fetchval(
                    "SELECT count(*) FROM bots WHERE owner_id = $1", owner_id, timeout=self._timeout
                )
                if count >= max_owner_bots:
                    raise OwnerBotsQuota(owner_id, max_owner_bots)
            row = await conn.fetchrow(sql, *args, timeout=self._timeout)
        if row is None:
            raise AlreadyRegistered(token.bot_id)
        return record_of(row)

    async def add_many(self, items: Sequence[tuple[BotToken, str]], handler: str = "echo") -> int:
        """Bulk insert (token, username) pairs; existing bots are skipped. Returns rows added."""
        rows = [(t.bot_id, u, *self._box.seal(t), handler) for t, u in items]
        async with self._pool.acquire(timeout=self._timeout) as conn:
            before = await conn.fetchval("SELECT count(*) FROM bots", timeout=self._timeout)
            await conn.executemany(
                "INSERT INTO bots (id, username, key_id, token_encrypted, handler)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                rows,
                timeout=self._timeout * 10,
            )
            after = await conn.fetchval("SELECT count(*) FROM bots", timeout=self._timeout)
        return int(after - before)

    async def get(self, bot_id: int, *, owner_id: int | None = None) -> BotRecord | None:
        """The bot, or None; with `owner_id`, None too if another owner has it."""
        row = await self._pool.fetchrow(
            f"SELECT {COLUMNS} FROM bots WHERE id = $1 AND ($2::bigint IS NULL OR owner_id = $2)",
            bot_id,
            owner_id,
            timeout=self._timeout,
        )
        return None if row is None else record_of(row)

    async def list(self, owner_id: int | None = None) -> list[BotRecord]:
        if owner_id is None:
            rows = await self._pool.fetch(
                f"SELECT {COLUMNS} FROM bots ORDER BY id", timeout=self._timeout
            )
        else:
            rows = await self._pool.fetch(
                f"SELECT {COLUMNS} FROM bots WHERE owner_id = $1 ORDER BY id",
                owner_id,
                timeout=self._timeout,
            )
        return [record_of(r) for r in rows]

    async def remove(
        self, bot_id: int, *, owner_id: int | None = None, audit: AuditEntry | None = None
    ) -> bool:
        sql, args = audited(
            "DELETE FROM bots WHERE id = $1 AND ($2::bigint IS NULL OR owner_id = $2)"
            " RETURNING id, owner_id",
            [bot_id, owner_id],
            audit,
        )
        row = await self._pool.fetchrow(sql, *args, timeout=self._timeout)
        return row is not None

    async def update(
        self,
        bot_id: int,
        *,
        handler: str | None = None,
        settings: Mapping[str, Any] | None = None,
        state: BotState | None = None,
        owner_id: int | None = None,
        audit: AuditEntry | None = None,
        mode: BotMode | None = None,
    ) -> BotRecord | None:
        """Change what is given, bump `revision`; None if there is no such bot (of `owner_id`,
        when given). A new state clears `disabled_reason`. `audit`: written by the same
        statement. Webhook mode gets a fresh random secret_token each time it is set (the
        worker then calls setWebhook with it)."""
        key_id: str | None = None
        blob: bytes | None = None
        if mode is BotMode.WEBHOOK:
            key_id, blob = self._box.seal_secret(bot_id, secrets.token_urlsafe(48))
        sql, args = audited(
            "UPDATE bots SET handler = COALESCE($2, handler),"
            " settings = COALESCE($3::jsonb, settings), state = COALESCE($4, state),"
            " disabled_reason = CASE WHEN $4::text IS NULL THEN disabled_reason END,"
            " mode = COALESCE($6, mode), webhook_key_id = COALESCE($7, webhook_key_id),"
            " webhook_secret = COALESCE($8, webhook_secret),"
            " revision = revision + 1, updated_at = now()"
            f" WHERE id = $1 AND ($5::bigint IS NULL OR owner_id = $5) RETURNING {COLUMNS}",
            [
                bot_id,
                handler,
                None if settings is None else json.dumps(dict(settings)),
                None if state is None else str(state),
                owner_id,
                None if mode is None else str(mode),
                key_id,
                blob,
            ],
            audit,
        )
        row = await self._pool.fetchrow(sql, *args, timeout=self._timeout)
        return None if row is None else record_of(row)

    async def replace_token(
        self,
        token: BotToken,
        username: str,
        *,
        owner_id: int | None = None,
        audit: AuditEntry | None = None,
    ) -> BotRecord | None:
        """A new token for a registered bot (same id), re-encrypted under the current key;
        owner, handler and settings stay; a disabled bot is active again."""
        sql, args = audited(
            "UPDATE bots SET key_id = $2, token_encrypted = $3, username = $4,"
            " state = CASE WHEN state = 'disabled' THEN 'active' ELSE state END,"
            " disabled_reason = NULL, revision = revision + 1, updated_at = now()"
            f" WHERE id = $1 AND ($5::bigint IS NULL OR owner_id = $5) RETURNING {COLUMNS}",
            [token.bot_id, *self._box.seal(token), username, owner_id],
            audit,
        )
        row = await self._pool.fetchrow(sql, *args, timeout=self._timeout)
        return None if row is None else record_of(row)

    async def set_state(
        self,
        bot_id: int,
        state: BotState,
        reason: str | None = None,
        *,
        if_revision: int | None = None,
    ) -> bool:
        """`if_revision`: only if the row is still at that revision (a worker disabling the
        bot it runs must not undo an admin's change made meanwhile, e.g. `bots move-api`'s
        pause → logOut → resume, whose logOut ends the old poll with a 401)."""
        status = await self._pool.execute(
            "UPDATE bots SET state = $2, disabled_reason = $3, revision = revision + 1,"
            " updated_at = now() WHERE id = $1 AND ($4::bigint IS NULL OR revision = $4)",
            bot_id,
            str(state),
            reason,
            if_revision,
            timeout=self._timeout,
        )
        return status.endswith(" 1")

    # -- encryption keys -----------------------------------------------------------------

    def decrypt(self, bot_id: int, blob: bytes, key_id: str) -> BotToken:
        """One stored token (the reconciler decrypts only those it is about to use)."""
        return self._box.decrypt(bot_id, blob, key_id)

    def open_secret(self, bot_id: int, blob: bytes, key_id: str) -> str:
        """A stored webhook secret (the reconciler opens those of bots it starts)."""
        return self._box.open_secret(bot_id, blob, key_id)

    def use_tokenbox(self, box: TokenBox) -> None:
        """Runs on reload: later queries encrypt and decrypt with this keyring."""
        self._box = box

    async def rotate_keys(self, batch: int = 500) -> KeyRotation:
        """Re-encrypt every token not under the current key (supervisor/registry/keyrotation.py)."""
        from supervisor.registry.keyrotation import rotate_keys

        return await rotate_keys(self._pool, self._box, self._timeout, batch)
