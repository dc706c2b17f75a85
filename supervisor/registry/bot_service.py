"""The operations on bots that both the admin API and `botvisor bots …` perform: one path.

Runs in the master (admin API handlers) or in a CLI process. Every change is written
to the registry first, then announced with a reconcile hint, so workers act on it
within a round trip (a lost hint delays it by one reconcile interval, never loses it).
Errors are `BotServiceError`s whose `kind` the API turns into a status and the CLI
into an exit status; their messages never hold a token.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from config.bot_settings import BadBotSettings, check_for
from supervisor.registry.bots import AlreadyRegistered, BotMode, BotRecord, BotState, Registry
from supervisor.registry.owners import Caller
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


class BotServiceError(Exception):
    def __init__(self, kind: ErrorKind, code: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message


def _not_found(bot_id: int) -> BotServiceError:
    return BotServiceError(ErrorKind.NOT_FOUND, "not_found", f"bot {bot_id} is not registered")


class BotService:
    """One caller's view of the registry: an owner sees only its own bots, as if the
    others did not exist (a 404, never a 403, so ids of others' bots don't leak)."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        session: aiohttp.ClientSession,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._session = session
        self._redis = redis  # for hints; None: one connection per hint (a CLI run)
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
        before the duplicate test, so only a holder of a live token learns a bot is taken."""
        settings = self._check_settings(settings or {})
        self._check(handler, settings, new_handler=True, caller=caller)
        try:
            parsed = BotToken(token)
        except BadToken as exc:
            raise BotServiceError(ErrorKind.INVALID, "invalid_token", f"token: {exc}") from None
        owner_id = await self._owner_id(caller, owner)
        me = await self._get_me(parsed)
        try:
            record = await self._registry.add(
                parsed,
                username=str(me.get("username", "")),
                handler=handler,
                settings=settings,
                owner_id=owner_id,
            )
        except AlreadyRegistered as exc:
            raise BotServiceError(ErrorKind.CONFLICT, "already_registered", str(exc)) from None
        await publish_hint(self._settings, (record.id,), self._redis)
        log.info("bot.registered", bot_id=record.id, owner_id=owner_id, handler=handler)
        return record

    async def list(self, caller: Caller) -> list[BotRecord]:
        return await self._registry.list(caller.scope)

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
        model (another owner's bot: 404 first)."""
        if mode is BotMode.WEBHOOK and not self._settings.webhook.enabled:
            raise BotServiceError(
                ErrorKind.INVALID,
                "webhook_not_configured",
                "mode: webhook mode needs webhook.public_url in the configuration "
                "(the public https URL of this host's webhook ingress)",
            )
        if handler is not None or settings is not None:
            current = await self.get(caller, bot_id)
            if settings is not None:
                settings = self._check_settings(settings)
            self._check(
                handler or current.handler,
                current.settings if settings is None else settings,
                new_handler=handler is not None and handler != current.handler,
                caller=caller,
            )
        return await self._change(
            caller, bot_id, "updated", handler=handler, settings=settings, mode=mode
        )

    async def replace_token(self, caller: Caller, bot_id: int, token: str) -> BotRecord:
        """A new token from @BotFather for bot `bot_id` (after /revoke): checked with getMe,
        stored re-encrypted; owner, handler and settings stay, a disabled bot polls again."""
        try:
            parsed = BotToken(token)
        except BadToken as exc:
            raise BotServiceError(ErrorKind.INVALID, "invalid_token", f"token: {exc}") from None
        await self.get(caller, bot_id)  # another owner's bot is a 404 before any getMe
        if parsed.bot_id != bot_id:
            raise BotServiceError(
                ErrorKind.INVALID,
                "token_of_another_bot",
                f"token: it belongs to bot {parsed.bot_id}, not bot {bot_id}; a bot keeps "
                "its id when @BotFather issues a new token",
            )
        me = await self._get_me(parsed)
        record = await self._registry.replace_token(
            parsed, str(me.get("username", "")), owner_id=caller.scope
        )
        if record is None:
            raise _not_found(bot_id)
        await publish_hint(self._settings, (bot_id,), self._redis)
        log.info("bot.token_replaced", bot_id=bot_id, revision=record.revision)
        return record

    async def pause(self, caller: Caller, bot_id: int) -> BotRecord:
        return await self._change(caller, bot_id, "paused", state=BotState.PAUSED)

    async def resume(self, caller: Caller, bot_id: int) -> BotRecord:
        """Active again; a disabled bot is tried again (its reason is cleared)."""
        return await self._change(caller, bot_id, "resumed", state=BotState.ACTIVE)

    async def remove(self, caller: Caller, bot_id: int) -> None:
        if not await self._registry.remove(bot_id, owner_id=caller.scope):
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
        mode: BotMode | None = None,
    ) -> BotRecord:
        record = await self._registry.update(
            bot_id,
            handler=handler,
            settings=settings,
            state=state,
            owner_id=caller.scope,
            mode=mode,
        )
        if record is None:
            raise _not_found(bot_id)
        await publish_hint(self._settings, (bot_id,), self._redis)
        log.info(f"bot.{what}", bot_id=bot_id, revision=record.revision)
        return record

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

    async def _get_me(self, token: BotToken) -> dict[str, Any]:
        tg = self._settings.telegram
        try:
            return await fetch_me(self._session, tg.api_base, token, tg.request_timeout_s)
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
                f"could not check the token with getMe at {tg.api_base}: {exc}; try again",
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
