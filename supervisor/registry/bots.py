"""The bot registry: PostgreSQL table `bots`, the desired state every worker converges to."""

from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import asyncpg

from bots.actor.actor import BotSpec
from bots.telegram.token import BotToken
from config.bot_settings import BadBotSettings, check_bot_settings, shown
from supervisor.registry.audit import AuditEntry, audited
from supervisor.registry.tokenbox import TokenBox, TokenDecryptError

if TYPE_CHECKING:
    from supervisor.registry.keyrotation import KeyRotation


class BotState(StrEnum):
    """Values of the `bots.state` column."""

    #: should be polling
    ACTIVE = "active"
    #: kept, but not polling (owner's choice)
    PAUSED = "paused"
    #: Telegram rejected the token; `disabled_reason` says why
    DISABLED = "disabled"


class BotMode(StrEnum):
    """Values of the `bots.mode` column (migration 0006)."""

    #: the bot's actor long-polls getUpdates
    POLLING = "polling"
    #: Telegram posts updates to the host's webhook ingress
    WEBHOOK = "webhook"


class AlreadyRegistered(Exception):
    def __init__(self, bot_id: int) -> None:
        super().__init__(f"bot {bot_id} is already registered")
        self.bot_id = bot_id


class OwnerBotsQuota(Exception):
    """The owner already has as many bots as its quota allows."""

    def __init__(self, owner_id: int, limit: int) -> None:
        super().__init__(f"owner {owner_id} already has {limit} bot(s), its quota")
        self.owner_id = owner_id
        self.limit = limit


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
    #: why the stored row could not be read whole (its settings are then shown empty)
    problem: str | None = None
    mode: BotMode = BotMode.POLLING

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner_id": self.owner_id,
            "username": self.username,
            "token": f"{self.id}:***",
            "handler": self.handler,
            "settings": shown(self.settings),  # a proxy's password masked
            "state": str(self.state),
            "disabled_reason": self.disabled_reason,
            "revision": self.revision,
            "problem": self.problem,
            "mode": str(self.mode),
        }


_COLUMNS = "id, owner_id, username, handler, settings, state, disabled_reason, revision, mode"
#: first key of the advisory lock that serialises one owner's registrations (quota count)
_OWNER_LOCK = 0x626F7471  # "botq"


def _stored_settings(raw: Any) -> tuple[dict[str, Any], str | None]:
    """A row's settings, or {} and why not: one unreadable row never breaks a list."""
    try:
        return check_bot_settings(json.loads(raw) if isinstance(raw, str) else raw), None
    except (ValueError, BadBotSettings, RecursionError) as exc:
        return {}, f"stored settings are unreadable ({exc}); replace them with PATCH"


def _record(row: asyncpg.Record) -> BotRecord:
    settings, problem = _stored_settings(row["settings"])
    return BotRecord(
        id=row["id"],
        owner_id=row["owner_id"],
        username=row["username"],
        handler=row["handler"],
        settings=settings,
        state=BotState(row["state"]),
        disabled_reason=row["disabled_reason"],
        revision=row["revision"],
        problem=problem,
        mode=BotMode(row["mode"]),
    )


class Registry:
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
            f" RETURNING {_COLUMNS}",
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
        return _record(row)

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
            f"SELECT {_COLUMNS} FROM bots WHERE id = $1 AND ($2::bigint IS NULL OR owner_id = $2)",
            bot_id,
            owner_id,
            timeout=self._timeout,
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
            f" WHERE id = $1 AND ($5::bigint IS NULL OR owner_id = $5) RETURNING {_COLUMNS}",
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
        return None if row is None else _record(row)

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
            f" WHERE id = $1 AND ($5::bigint IS NULL OR owner_id = $5) RETURNING {_COLUMNS}",
            [token.bot_id, *self._box.seal(token), username, owner_id],
            audit,
        )
        row = await self._pool.fetchrow(sql, *args, timeout=self._timeout)
        return None if row is None else _record(row)

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
    ) -> tuple[int, builtins.list[BotRecord]]:
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
                f"SELECT {_COLUMNS} FROM bots{where} ORDER BY id OFFSET $5 LIMIT $6",
                *args,
                offset,
                limit,
                timeout=self._timeout,
            )
        return int(total), [_record(r) for r in rows]

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

    # -- owners --------------------------------------------------------------------------

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

    async def owners(self) -> builtins.list[OwnerRecord]:
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
