"""What BotService (supervisor/registry/bot_service.py) checks before it stores anything: the
settings against the workers' rules, the handler, the token with getMe, the owner a bot is
registered for, and that owner's bots quota. Each refusal is a BotServiceError.

Runs where BotService runs: the master (admin API, dashboard), a worker (manager bot) or a
CLI process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from bots.handlers.base import UnknownHandler
from bots.handlers.plugins import is_reference
from bots.handlers.registry import HANDLERS, check_settings, resolve, unavailable
from bots.telegram.api import fetch_me
from bots.telegram.errors import BotNetworkError, TelegramError, TokenRejected
from bots.telegram.token import BotToken
from config import Settings
from config.bot_settings import BadBotSettings, check_for, telegram_for
from supervisor.registry.bot_service_errors import BotServiceError, ErrorKind, QuotaExceeded
from supervisor.registry.bots import Registry
from supervisor.registry.owners import Caller
from supervisor.registry.quotas import BOTS, QuotaStore


def checked_settings(settings: Settings, bot_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The rules the workers apply (config/bot_settings.py), before anything is stored."""
    try:
        return check_for(settings, dict(bot_settings))
    except BadBotSettings as exc:
        raise BotServiceError(ErrorKind.INVALID, "invalid_settings", str(exc)) from None


def check_handler(
    settings: Settings,
    handler: str,
    bot_settings: Mapping[str, Any],
    *,
    new_handler: bool,
    caller: Caller,
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
    reason = unavailable(handler, settings) if new_handler else None
    if reason is not None:
        raise BotServiceError(ErrorKind.INVALID, "handler_unavailable", reason)
    problems = check_settings(handler, bot_settings)
    if problems:
        raise BotServiceError(
            ErrorKind.INVALID,
            "invalid_settings",
            f"settings of a {handler} bot: " + "; ".join(problems),
        )


async def get_me(
    session: aiohttp.ClientSession,
    settings: Settings,
    token: BotToken,
    bot_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """getMe at the bot's own Bot API server (its settings' telegram.api_base, e.g. a
    local server it was moved to), through the deployment's proxy."""
    tg = settings.telegram
    base = telegram_for(settings, bot_settings or {}).api_base
    try:
        return await fetch_me(session, base, token, tg.request_timeout_s)
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


async def owner_id_for(registry: Registry, caller: Caller, owner: str | None) -> int | None:
    """The owner a new bot is registered for: the caller's own, or the one the admin names."""
    if owner is None:
        return caller.owner_id
    if not caller.admin:
        raise BotServiceError(
            ErrorKind.FORBIDDEN,
            "forbidden",
            "owner: only the admin key may register a bot for an owner; "
            "an owner's key registers bots for itself",
        )
    owner_id = await registry.owner_id_by_name(owner)
    if owner_id is None:
        raise BotServiceError(
            ErrorKind.INVALID,
            "unknown_owner",
            f"owner: no owner named {owner!r}; create it with `botvisor owners add`",
        )
    return owner_id


async def bots_quota(registry: Registry, settings: Settings, owner_id: int | None) -> int:
    """The owner's bots quota (0: unlimited); refused here already when it is reached."""
    if owner_id is None:
        return 0  # the admin's own bots
    store = QuotaStore(registry.pool, settings.database.timeout_s)
    limit = (await store.quota(settings, owner_id)).bots
    if limit > 0:
        found = await registry.owner(owner_id)
        used = found.bots if found is not None else 0
        if used >= limit:
            raise QuotaExceeded(BOTS, limit, used)
    return limit
