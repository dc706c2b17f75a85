"""A bot in webhook mode: Telegram posts its updates to the host's ingress
(bots/telegram/webhook_ingress.py), which appends them to the bot's shard stream; the
worker's inbox reader hands them to this actor's dispatcher like polled ones.

The actor's own part is the switch: it first takes over whatever polling left
unconfirmed — getUpdates from the progress record's watermark, each batch appended to
the inbox before the next call confirms it — and only then calls setWebhook, so no
update is lost between the two sources and none is answered twice (the dispatcher's
answered-once record drops re-deliveries). It then waits for its stop; the webhook
stays set across restarts (the ingress keeps queueing meanwhile). The switch back is the
poller's: its first getUpdates answers 409 "webhook is active", it calls deleteWebhook
and polls from its watermark (bots/actor/poll_loop.py).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from bots.actor.inbox_poll import InboxSink
from bots.telegram.api import BotApi
from bots.telegram.errors import Conflict, RetryAfter, ServerError

if TYPE_CHECKING:
    from bots.actor.dispatch import ChatDispatcher

log = structlog.get_logger(__name__)

#: what 409 says when a getUpdates meets a webhook (Bot API server, Client.cpp)
WEBHOOK_ACTIVE: Final = "webhook is active"
#: setWebhook retries (429: Telegram allows one a second per bot) before the actor fails
SET_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class WebhookSetup:
    """The host's webhook settings (config `[webhook]`) and the inbox updates go to."""

    public_url: str
    sink: InboxSink
    allowed_updates: tuple[str, ...] = ()
    max_connections: int = 40
    certificate: Path | None = None

    def url_of(self, bot_id: int) -> str:
        return f"{self.public_url.rstrip('/')}/tg/{bot_id}"


class InboxUnavailable(RuntimeError):
    """The takeover could not queue what polling left: retried by the actor's supervisor."""


class WebhookActor(Protocol):
    """What this mode needs of `BotActor`."""

    @property
    def api(self) -> BotApi: ...

    @property
    def stop_requested(self) -> bool: ...

    async def wait_stop(self, timeout: float) -> bool: ...

    async def interruptibly(self, aw: Awaitable[Any]) -> Any: ...


def is_webhook_conflict(exc: Conflict) -> bool:
    return WEBHOOK_ACTIVE in exc.description


async def run_webhook(
    actor: WebhookActor,
    bot_id: int,
    secret: str,
    setup: WebhookSetup,
    dispatcher: ChatDispatcher,
) -> None:
    if not await take_over_polled(actor, bot_id, setup.sink, dispatcher):
        return
    await set_webhook(actor, bot_id, secret, setup)
    log.debug("webhook.set", bot_id=bot_id)
    while not actor.stop_requested:
        await actor.wait_stop(3600.0)


async def take_over_polled(
    actor: WebhookActor, bot_id: int, sink: InboxSink, dispatcher: ChatDispatcher
) -> bool:
    """Queue and confirm every update Telegram still holds for getUpdates. False if a
    stop came first."""
    offset = dispatcher.watermark()
    while not actor.stop_requested:
        params: dict[str, Any] = {"timeout": 0, "limit": 100}
        if offset is not None:
            params["offset"] = offset
        try:
            updates = await actor.api.call("getUpdates", params)
        except Conflict as exc:
            if is_webhook_conflict(exc):
                return True  # the webhook is set already (a restart in webhook mode)
            raise
        except RetryAfter as exc:
            if await actor.wait_stop(exc.retry_after):
                return False
            continue
        if not isinstance(updates, list) or not updates:
            return True  # this call confirmed everything below `offset`
        fresh = [u for u in updates if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
        if fresh and not await sink.append(bot_id, fresh):
            raise InboxUnavailable(f"bot {bot_id}: inbox unavailable while switching to webhook")
        if fresh:
            offset = max(int(u["update_id"]) for u in fresh) + 1
    return False


async def set_webhook(actor: WebhookActor, bot_id: int, secret: str, setup: WebhookSetup) -> None:
    params: dict[str, Any] = {
        "url": setup.url_of(bot_id),
        "secret_token": secret,
        "max_connections": setup.max_connections,
    }
    if setup.allowed_updates:
        params["allowed_updates"] = list(setup.allowed_updates)
    for attempt in range(SET_ATTEMPTS):
        try:
            if setup.certificate is None:
                await actor.api.call("setWebhook", params)
            else:
                await actor.api.call_form("setWebhook", params, "certificate", setup.certificate)
            return
        except (RetryAfter, ServerError) as exc:
            if attempt == SET_ATTEMPTS - 1:
                raise
            wait = exc.retry_after if isinstance(exc, RetryAfter) else 1.0 + attempt
            if await actor.wait_stop(wait):
                return
