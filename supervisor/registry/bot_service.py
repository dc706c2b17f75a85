"""The operations on bots that both the admin API and `botvisor bots …` perform: one path.

Runs in the master (admin API handlers) or in a CLI process. Every change is written
to the registry first, then announced with a reconcile hint, so workers act on it
within a round trip (a lost hint delays it by one reconcile interval, never loses it).
Errors are `BotServiceError`s (supervisor/registry/bot_service_errors.py) whose `kind`
the API turns into a status and the CLI into an exit status; their messages never hold a
token. What is checked before anything is stored is in supervisor/registry/bot_checks.py.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import structlog

from bots.handlers.plugins import use_paths
from bots.telegram.token import BadToken, BotToken
from config import Settings
from config.bot_settings import keep_hidden
from supervisor.registry.audit import AuditEntry, AuditLog, actor_of
from supervisor.registry.bot_checks import (
    bots_quota,
    check_handler,
    checked_settings,
    get_me,
    owner_id_for,
)
from supervisor.registry.bot_records import (
    AlreadyRegistered,
    BotMode,
    BotRecord,
    BotState,
    OwnerBotsQuota,
)
from supervisor.registry.bot_service_errors import BotServiceError, ErrorKind, QuotaExceeded
from supervisor.registry.bots import Registry
from supervisor.registry.owners import Caller
from supervisor.registry.quotas import BOTS
from supervisor.services import publish_hint

log = structlog.get_logger(__name__)


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
            settings = checked_settings(self._settings, settings or {})
            check_handler(self._settings, handler, settings, new_handler=True, caller=caller)
            try:
                parsed = BotToken(token)
            except BadToken as exc:
                raise BotServiceError(ErrorKind.INVALID, "invalid_token", f"token: {exc}") from None
            owner_id = await owner_id_for(self._registry, caller, owner)
            limit = await bots_quota(self._registry, self._settings, owner_id)
            me = await get_me(self._session, self._settings, parsed, settings)
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
        with self._refusals(caller, "bot.update", f"bot:{bot_id}"):
            if handler is not None or settings is not None:
                current = await self.get(caller, bot_id)
                if settings is not None:
                    settings = checked_settings(
                        self._settings, keep_hidden(settings, current.settings)
                    )
                check_handler(
                    self._settings,
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
            me = await get_me(self._session, self._settings, parsed, current.settings)
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

    # -- the audit log ---------------------------------------------------------------------

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
