"""`botvisor bots move-api ID --to URL`: move a bot between Bot API servers.

Telegram's rule: a bot leaving the cloud server calls `logOut` there first (it may
come back only after 10 minutes); a bot leaving a local `telegram-bot-api --local`
server calls `close` there (refused with 429 in the first 10 minutes after launch).
The deployment's `telegram.api_base` counts as the cloud; any other base is local.

Order: pause the bot (its worker stops polling the old server), logOut/close on the
old server, store the new base in the bot's settings (`telegram.api_base`; the
deployment's base is stored as no override), then resume it if it was active. A poll
that had not yet stopped gets the old server's 401; its worker's "disabled" is written
only for the revision it ran (Registry.set_state if_revision), which the pause already
superseded, so it cannot undo the move.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import aiohttp

from bots.telegram.api import BotApi
from bots.telegram.errors import TelegramError
from bots.telegram.net import NetOptions
from config import Settings
from config.bot_settings import telegram_for
from config.sections.services import TelegramSection
from ratelimit import BotLimiter, Limits
from supervisor.registry.bot_records import BotState
from supervisor.registry.bot_service import BotService
from supervisor.registry.bot_service_errors import BotServiceError, ErrorKind
from supervisor.registry.bots import Registry
from supervisor.registry.owners import ADMIN

_API_BASE: Final = re.compile(TelegramSection.model_fields["api_base"].metadata[0].pattern)


async def move_api(
    settings: Settings,
    svc: BotService,
    registry: Registry,
    session: aiohttp.ClientSession,
    bot_id: int,
    to: str,
    say: Callable[[str], None],
) -> None:
    """Runs in the CLI's loop. Raises BotServiceError with a message for the user."""
    target = to.rstrip("/")
    if not _API_BASE.match(target):
        raise BotServiceError(
            ErrorKind.INVALID, "invalid_api_base", f"--to {to!r}: expected an http(s) URL"
        )
    record = await svc.get(ADMIN, bot_id)
    way = telegram_for(settings, record.settings)
    if way.api_base == target:
        say(f"bot {bot_id}: already on {target}")
        return
    token = await registry.token_of(bot_id)
    if token is None:
        raise BotServiceError(ErrorKind.NOT_FOUND, "not_found", f"bot {bot_id} not found")
    leaving_cloud = way.api_base == settings.telegram.api_base.rstrip("/")
    method = "logOut" if leaving_cloud else "close"
    was_active = record.state is BotState.ACTIVE
    if was_active:
        await svc.pause(ADMIN, bot_id)
    api = BotApi(
        session,
        way.api_base,
        token,
        BotLimiter(Limits.telegram_defaults()),
        request_timeout=settings.telegram.request_timeout_s,
        max_retries=0,
        net=NetOptions.from_settings(settings, way.proxy),
    )
    try:
        await api.call(method)
    except TelegramError as exc:
        if was_active:
            await svc.resume(ADMIN, bot_id)  # it stays where it was
        raise BotServiceError(
            ErrorKind.CONFLICT,
            "move_refused",
            f"bot {bot_id}: {method} at {way.api_base} refused: {exc.code} {exc.description}"
            + ("; try again later" if exc.code == 429 else ""),
        ) from None
    say(f"bot {bot_id}: {method} at {way.api_base}: done")
    await svc.update(ADMIN, bot_id, settings=_with_base(settings, record.settings, target))
    if was_active:
        await svc.resume(ADMIN, bot_id)
    say(f"bot {bot_id}: now on {target}" + ("" if was_active else f" ({record.state})"))


def _with_base(settings: Settings, current: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The bot's settings with `telegram.api_base` = target (dropped when it is the default)."""
    own = dict(current.get("telegram") or {})
    if target == settings.telegram.api_base.rstrip("/"):
        own.pop("api_base", None)
    else:
        own["api_base"] = target
    out = {k: v for k, v in current.items() if k != "telegram"}
    if own:
        out["telegram"] = own
    return out
