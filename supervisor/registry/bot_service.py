"""The operations on bots that both the admin API and `botvisor bots …` perform: one path.

Runs in the master (admin API handlers) or in a CLI process. Every change is written
to the registry first, then announced with a reconcile hint, so workers act on it
within a round trip (a lost hint delays it by one reconcile interval, never loses it).
Errors are `BotServiceError`s whose `kind` the API turns into a status and the CLI
into an exit status; their messages never hold a token.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import structlog

from bots.handlers.base import UnknownHandler
from bots.handlers.plugins import is_reference, use_paths
from bots.handlers.registry import HANDLERS, check_settings, resolve, unavailable
from bots.telegram.api import BotNetworkError, TelegramError, TokenRejected, fetch_me
from bots.telegram.token import BadToken, BotToken
from config import Settings
from config.bot_settings import BadBotSettings, check_for, keep_hidden, telegram_for
from supervisor.registry.audit import AuditEntry, AuditLog, actor_of
from supervisor.registry.bot_records import (
    AlreadyRegistered,
    BotMode,
    BotRecord,
    BotState,
    OwnerBotsQuota,
)
from supervisor.registry.bots import Registry
from supervisor.registry.owners import Caller
from supervisor.registry.quotas import BOTS, QuotaStore
from supervisor.services import publish_hint

log = structlog.get_logger(__name__)


class ErrorKind(StrEnum):
    #: no such bot, or not the caller's
    NOT_FOUND = "not_found"
    #: the bot is registered already
    CONFLICT = "conflict"
    #: a value is wrong (bad token shape, unknown handler or owner, token rejected)
    INVALID = "invalid"
    #: the caller may not do this
    FORBIDDEN = "forbidden"
    #: Telegram did not answer getMe
    UPSTREAM = "upstream"
    #: the owner is at a quota (`QuotaExceeded` says which)
    QUOTA = "quota"


class BotServiceError(Exception):
    def __init__(self, kind: ErrorKind, code: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message


class QuotaExceeded(BotServiceError):
    """Refused: the owner is at `quota` (e.g. "bots"), whose limit is `limit`."""

    def __init__(self, quota: str, limit: int, used: int) -> None:
        super().__init__(
            ErrorKind.QUOTA,
            "quota_exceeded",
            f"quota: the owner has {used} of its {limit} {quota}; remove one first, or ask "
            "the admin to raise the quota (`botvisor owners set-quota`)",
        )
        self.quota = quota
        self.limit = limit
        self.used = used


def _not_found(bot_id: int) -> BotServiceError:
    return BotServiceError(ErrorKind.NOT_FOUND, "not_found", f"bot {bot_id} is not registered")


def _target_of(token: str) -> str:
    """`bot:<id>` from a token's id part, never the secret part ("" for a malformed one)."""
    head = token.partition(":")[0].strip()
    return f"bot:{head}" if head.isascii() and head.isdigit() and len(head) <= 19 else ""


class BotService:
    """One caller's view of the registry: an owner sees only its own bots, as if the
    others did not exist (a 404, never a 403, so ids of others' bots don't leak)."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        session: aiohttp.ClientSession,
        redis: aioredis.Redis | None = None,
        *,
        audit: AuditLog | None = None,
        source: str = "unknown",
    ) -> None:
        """`audit`: where changes and refusals are recorded (None: not recorded, e.g. tests
        of the service alone); `source`: where the calls come from ("http:<ip>", "cli",
        "telegram:<user id>")."""
        self._registry = registry
        self._settings = settings
        self._session = session
        self._redis = redis  # for hints; None: one connection per hint (a CLI run)
        self._audit = audit
        self._source = source
        use_paths(settings.handlers.paths)  # plugin references are checked by importing them

    async def register(
        self,
        caller: Caller,
        token: str,
        *,
        handler: str = "echo",
        settings: Mapping[str, Any] | None = None,
        owner: str | None = None,
    ) -> BotRecord:
        """Check the token with getMe, store the bot, hint the workers. The token is checked
        before the duplicate test, so only a holder of a live token learns a bot is taken.
        An owner at its bots quota is refused before getMe, and again under a lock at the
        insert (concurrent registrations cannot overshoot it)."""
        with self._refusals(caller, "bot.register", _target_of(token)):
            settings = self._check_settings(settings or {})
            self._check(handler, settings, new_handler=True, caller=caller)
            try:
                parsed = BotToken(token)
            except BadToken as exc:
                raise BotServiceError(ErrorKind.INVALID, "invalid_token", f"token: {exc}") from None
            owner_id = await self._owner_id(caller, owner)
            limit = await self._bots_quota(owner_id)
            me = await self._get_me(parsed, settings)
            username = str(me.get("username", ""))
            try:
                record = await self._registry.add(
                    parsed,
                    username=username,
                    handler=handler,
                    settings=settings,
                    owner_id=owner_id,
                    max_owner_bots=limit,
                    audit=self._entry(
                        caller,
                        "bot.register",
                        parsed.bot_id,
                        {"handler": handler, "username": username, "settings": sorted(settings)},
                    ),
                )
            except AlreadyRegistered as exc:
                raise BotServiceError(ErrorKind.CONFLICT, "already_registered", str(exc)) from None
            except OwnerBotsQuota as exc:
                raise QuotaExceeded(BOTS, exc.limit, exc.limit) from None
        await publish_hint(self._settings, (record.id,), self._redis)
        log.info("bot.registered", bot_id=record.id, owner_id=owner_id, handler=handler)
        return record

    async def list(self, caller: Caller) -> list[BotRecord]:
        return await self._registry.list(caller.scope)

    async def search(
        self, caller: Caller, query: str = "", *, offset: int = 0, limit: int = 50
    ) -> tuple[int, builtins.list[BotRecord]]:
        """A page of the caller's bots (the admin's: all) matching `query` (part of the
        username, or the start of the id), and how many match in all."""
        query = query.replace("\x00", "").strip()[:64]
        return await self._registry.search(caller.scope, query, offset, limit)

    async def states(
        self, caller: Caller, bot_ids: Sequence[int]
    ) -> dict[int, tuple[BotState, str | None]]:
        """(state, disabled reason) of those bots the caller may see; others are left out."""
        return await self._registry.states_of(caller.scope, bot_ids)

    async def get(self, caller: Caller, bot_id: int) -> BotRecord:
        record = await self._registry.get(bot_id, owner_id=caller.scope)
        if record is None:
            raise _not_found(bot_id)
        return record

    async def update(
        self,
        caller: Caller,
        bot_id: int,
        *,
        handler: str | None = None,
        settings: Mapping[str, Any] | None = None,
        mode: BotMode | None = None,
    ) -> BotRecord:
        """Replace the handler and/or the settings object and/or the mode; bumps the
        revision. The result is checked against the shared rules and the handler's settings
        model (another owner's bot: 404 first). The audit row names the settings' keys,
        never their values."""
        if mode is BotMode.WEBHOOK and not self._settings.webhook.enabled:
            raise BotServiceError(
                ErrorKind.INVALID,
                "webhook_not_configured",
                "mode: webhook mode needs webhook.public_url in the configuration "
                "(the public https URL of this host's webhook ingress)",
            )
        """Replace the handler and/or the settings object; bumps the revision. The result is
        checked against the shared rules and the handler's settings model (another owner's
        bot: 404 first). The audit row names the settings' keys, never their values."""
        with self._refusals(caller, "bot.update", f"bot:{bot_id}"):
            if handler is not None or settings is not None:
                current = await self.get(caller, bot_id)
                if settings is not None:
                    settings = self._check_settings(keep_hidden(settings, current.settings))
                self._check(
                    handler or current.handler,
                    current.settings if settings is None else settings,
                    new_handler=handler is not None and handler != current.handler,
                    caller=caller,
                )
            detail: dict[str, Any] = {"handler": handler}
            if settings is not None:
                detail["settings"] = sorted(settings)
            if mode is not None:
                detail["mode"] = str(mode)
            return await self._change(
                caller,
                bot_id,
                "updated",
                handler=handler,
                settings=settings,
                detail=detail,
                mode=mode,
            )

    async def replace_token(self, caller: Caller, bot_id: int, token: str) -> BotRecord:
        """A new token from @BotFather for bot `bot_id` (after /revoke): checked with getMe,
        stored re-encrypted; owner, handler and settings stay, a disabled bot polls again."""
        with self._refusals(caller, "bot.replace_token", f"bot:{bot_id}"):
            try:
                parsed = BotToken(token)
            except BadToken as exc:
                raise BotServiceError(ErrorKind.INVALID, "invalid_token", f"token: {exc}") from None
            current = await self.get(caller, bot_id)  # another owner's bot: 404 before any getMe
            if parsed.bot_id != bot_id:
                raise BotServiceError(
                    ErrorKind.INVALID,
                    "token_of_another_bot",
                    f"token: it belongs to bot {parsed.bot_id}, not bot {bot_id}; a bot keeps "
                    "its id when @BotFather issues a new token",
                )
            me = await self._get_me(parsed, current.settings)
            record = await self._registry.replace_token(
                parsed,
                str(me.get("username", "")),
                owner_id=caller.scope,
                audit=self._entry(caller, "bot.replace_token", bot_id),
            )
            if record is None:
                raise _not_found(bot_id)
        await publish_hint(self._settings, (bot_id,), self._redis)
        log.info("bot.token_replaced", bot_id=bot_id, revision=record.revision)
        return record

    async def pause(self, caller: Caller, bot_id: int) -> BotRecord:
        with self._refusals(caller, "bot.pause", f"bot:{bot_id}"):
            return await self._change(caller, bot_id, "paused", state=BotState.PAUSED)

    async def resume(self, caller: Caller, bot_id: int) -> BotRecord:
        """Active again; a disabled bot is tried again (its reason is cleared)."""
        with self._refusals(caller, "bot.resume", f"bot:{bot_id}"):
            return await self._change(caller, bot_id, "resumed", state=BotState.ACTIVE)

    async def remove(self, caller: Caller, bot_id: int) -> None:
        with self._refusals(caller, "bot.remove", f"bot:{bot_id}"):
            entry = self._entry(caller, "bot.remove", bot_id)
            if not await self._registry.remove(bot_id, owner_id=caller.scope, audit=entry):
                raise _not_found(bot_id)
        await publish_hint(self._settings, (bot_id,), self._redis)
        log.info("bot.removed", bot_id=bot_id)

    async def _change(
        self,
        caller: Caller,
        bot_id: int,
        what: str,
        *,
        handler: str | None = None,
        settings: Mapping[str, Any] | None = None,
        state: BotState | None = None,
        detail: Mapping[str, Any] | None = None,
        mode: BotMode | None = None,
    ) -> BotRecord:
        action = {"paused": "bot.pause", "resumed": "bot.resume"}.get(what, "bot.update")
        record = await self._registry.update(
            bot_id,
            handler=handler,
            settings=settings,
            state=state,
            owner_id=caller.scope,
            audit=self._entry(caller, action, bot_id, detail),
            mode=mode,
        )
        if record is None:
            raise _not_found(bot_id)
        await publish_hint(self._settings, (bot_id,), self._redis)
        log.info(f"bot.{what}", bot_id=bot_id, revision=record.revision)
        return record

    # -- quotas and the audit log ----------------------------------------------------------

    async def _bots_quota(self, owner_id: int | None) -> int:
        """The owner's bots quota (0: unlimited); refused here already when it is reached."""
        if owner_id is None:
            return 0  # the admin's own bots
        store = QuotaStore(self._registry.pool, self._settings.database.timeout_s)
        limit = (await store.quota(self._settings, owner_id)).bots
        if limit > 0:
            owner = await self._registry.owner(owner_id)
            used = owner.bots if owner is not None else 0
            if used >= limit:
                raise QuotaExceeded(BOTS, limit, used)
        return limit

    def _entry(
        self,
        caller: Caller,
        action: str,
        bot_id: int,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry | None:
        """The row a successful change writes in its own statement (None: no audit here)."""
        if self._audit is None:
            return None
        return AuditEntry(
            actor_of(caller),
            action,
            f"bot:{bot_id}",
            self._source,
            detail={k: v for k, v in (detail or {}).items() if v is not None},
        )

    @contextmanager
    def _refusals(self, caller: Caller, action: str, target: str) -> Iterator[None]:
        """A refused action is recorded too (best effort: never fails the answer)."""
        try:
            yield
        except BotServiceError as exc:
            if self._audit is not None:
                self._audit.record(caller, action, target, source=self._source, outcome=exc.code)
            raise

    def _check_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The rules the workers apply (config/bot_settings.py), before anything is stored."""
        try:
            return check_for(self._settings, dict(settings))
        except BadBotSettings as exc:
            raise BotServiceError(ErrorKind.INVALID, "invalid_settings", str(exc)) from None

    async def _owner_id(self, caller: Caller, owner: str | None) -> int | None:
        if owner is None:
            return caller.owner_id
        if not caller.admin:
            raise BotServiceError(
                ErrorKind.FORBIDDEN,
                "forbidden",
                "owner: only the admin key may register a bot for an owner; "
                "an owner's key registers bots for itself",
            )
        owner_id = await self._registry.owner_id_by_name(owner)
        if owner_id is None:
            raise BotServiceError(
                ErrorKind.INVALID,
                "unknown_owner",
                f"owner: no owner named {owner!r}; create it with `botvisor owners add`",
            )
        return owner_id

    async def _get_me(
        self, token: BotToken, bot_settings: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """getMe at the bot's own Bot API server (its settings' telegram.api_base, e.g. a
        local server it was moved to), through the deployment's proxy."""
        tg = self._settings.telegram
        base = telegram_for(self._settings, bot_settings or {}).api_base
        try:
            return await fetch_me(self._session, base, token, tg.request_timeout_s)
        except TokenRejected as exc:
            raise BotServiceError(
                ErrorKind.INVALID,
                "token_rejected",
                f"token: Telegram rejected the token of bot {token.bot_id} "
                f"({exc.code} {exc.description}); check it with @BotFather, "
                "a revoked token never works again",
            ) from None
        except (TelegramError, BotNetworkError) as exc:
            raise BotServiceError(
                ErrorKind.UPSTREAM,
                "telegram_unavailable",
                f"could not check the token with getMe at {base}: {exc}; try again",
            ) from None

    def _check(
        self, handler: str, settings: Mapping[str, Any], *, new_handler: bool, caller: Caller
    ) -> None:
        """A known handler this host can run (when new), settings its model accepts. An
        import path makes workers import that module and call what it names, so only the
        admin may set one; owners use built-ins and installed entry points."""
        if new_handler and not caller.admin and handler not in HANDLERS and is_reference(handler):
            raise BotServiceError(
                ErrorKind.FORBIDDEN,
                "forbidden",
                f"handler: {handler!r} is an import path; only the admin key may set one "
                "(owners use built-ins and the names in `botvisor handlers list`)",
            )
        try:
            resolve(handler)
        except UnknownHandler as exc:
            raise BotServiceError(
                ErrorKind.INVALID,
                "unknown_handler",
                f"handler: {exc}; built-in: {', '.join(sorted(HANDLERS))}",
            ) from None
        reason = unavailable(handler, self._settings) if new_handler else None
        if reason is not None:
            raise BotServiceError(ErrorKind.INVALID, "handler_unavailable", reason)
        problems = check_settings(handler, settings)
        if problems:
            raise BotServiceError(
                ErrorKind.INVALID,
                "invalid_settings",
                f"settings of a {handler} bot: " + "; ".join(problems),
            )
