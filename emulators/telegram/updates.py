"""Updates in and out: injected messages queue updates, which leave by getUpdates long
polls or, while a webhook is set, by webhook delivery (setWebhook, deleteWebhook).

Pending long polls are plain futures resolved by whoever has news for them (inject, a
newer getUpdates, setWebhook, revoke, a timer); nothing polls or sleeps. O(1) work per
request, O(limit) for getUpdates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from emulators.telegram.books import Books
from emulators.telegram.bots import WAKE, BotState
from emulators.telegram.results import (
    CONFLICT_GET_UPDATES,
    CONFLICT_SET_WEBHOOK,
    CONFLICT_WEBHOOK_ACTIVE,
    EMPTY_UPDATES,
    InjectError,
    Result,
    error,
    ok,
)

#: The Bot API server caps long-poll timeouts at 50 s (Client.h LONG_POLL_MAX_TIMEOUT).
LONG_POLL_MAX_TIMEOUT: Final = 50.0


class Updates(Books):
    """inject, getUpdates and the webhook settings of `EmulatorState`."""

    def inject(self, messages: Iterable[Mapping[str, Any]]) -> list[int]:
        """Queue one `message` update per item; all-or-nothing validation first."""
        items: list[tuple[BotState, int, str, int]] = []
        for msg in messages:
            try:
                bot_id = int(msg["bot_id"])
                chat_id = int(msg["chat_id"])
                text = str(msg.get("text", ""))
                user_id = msg.get("user_id")
                user = int(user_id) if user_id is not None else (chat_id if chat_id > 0 else 1)
            except (KeyError, TypeError, ValueError) as exc:
                raise InjectError(f"bad message: need bot_id, chat_id, text ({exc!r})") from None
            bot = self.bots.get(bot_id)
            if bot is None:
                raise InjectError(f"unknown bot_id {bot_id}")
            if chat_id == 0:
                raise InjectError("chat_id must not be 0")
            items.append((bot, chat_id, text, user))

        now = self.clock()
        date = int(time.time())
        dumps = orjson.dumps
        ids: list[int] = []
        woken: list[BotState] = []
        for bot, chat_id, text, user in items:
            chat = self._chat(bot, chat_id)
            message_id = chat.next_message_id
            chat.next_message_id = message_id + 1
            update_id = bot.next_update_id
            bot.next_update_id = update_id + 1
            if chat_id > 0:
                chat_obj: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": "User"}
            else:
                chat_obj = {"id": chat_id, "type": "group", "title": "Group"}
            body = dumps(
                {
                    "update_id": update_id,
                    "message": {
                        "message_id": message_id,
                        "from": {"id": user, "is_bot": False, "first_name": "User"},
                        "chat": chat_obj,
                        "date": date,
                        "text": text,
                    },
                }
            )
            bot.queue.append((update_id, body))
            injected = chat.injected
            if injected is None:
                injected = chat.injected = {}
            injected[message_id] = now
            ids.append(update_id)
            if bot.waiter is not None or bot.webhook_url:
                woken.append(bot)
        self.injected += len(items)
        for bot in woken:
            if bot.webhook_url:
                if self.on_webhook is not None:
                    self.on_webhook(bot)
            else:
                bot.resolve_waiter(WAKE)
        return ids

    async def get_updates(
        self, bot: BotState, offset: int, limit: int, poll_seconds: float
    ) -> Result:
        """getUpdates with Telegram's offset, long-poll and 409 semantics."""
        now = self.clock()
        bot.get_updates += 1
        self.get_updates_total += 1
        if bot.first_poll_at is None:
            bot.first_poll_at = now
        bot.last_poll_at = now
        if bot.webhook_url:
            return CONFLICT_WEBHOOK_ACTIVE
        if bot.resolve_waiter(CONFLICT_GET_UPDATES):
            bot.conflicts += 1
            self.conflicts += 1
        limit = 100 if limit <= 0 or limit > 100 else limit
        bot.confirm(offset)
        if bot.queue or poll_seconds <= 0:
            if self._watchers:
                self._notify()
            return bot.take(limit)

        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + min(poll_seconds, LONG_POLL_MAX_TIMEOUT)
        while True:
            fut: asyncio.Future[Result] = loop.create_future()
            bot.waiter = fut
            timer = loop.call_at(deadline, _expire, fut)
            if self._watchers:
                self._notify()
            try:
                result = await fut
            finally:
                # Also runs when the client went away and the handler got cancelled.
                timer.cancel()
                if bot.waiter is fut:
                    bot.waiter = None
                if self._watchers:
                    self._notify()
            if result is not WAKE:
                return result
            bot.confirm(offset)
            if bot.queue:
                return bot.take(limit)
            if loop.time() >= deadline:  # woken for updates below our offset, time is up
                return EMPTY_UPDATES

    def set_webhook(
        self, bot: BotState, url: str, secret: str | None, drop: bool, max_connections: int = 40
    ) -> Result:
        if not url:
            return self.delete_webhook(bot, drop)
        if not 1 <= max_connections <= 100_000:
            return error(400, "Bad Request: invalid max_connections specified")
        bot.resolve_waiter(CONFLICT_SET_WEBHOOK)
        bot.webhook_url = url
        bot.webhook_secret = secret
        bot.webhook_max_connections = max_connections
        if drop:
            bot.queue.clear()
        if self.on_webhook is not None:
            self.on_webhook(bot)
        return 200, b'{"ok":true,"result":true,"description":"Webhook was set"}'

    def delete_webhook(self, bot: BotState, drop: bool) -> Result:
        was_set = bool(bot.webhook_url)
        bot.webhook_url = ""
        bot.webhook_secret = None
        if drop:
            bot.queue.clear()
        if was_set and self.on_webhook is not None:
            self.on_webhook(bot)  # its delivery loop ends
        if was_set:
            return 200, b'{"ok":true,"result":true,"description":"Webhook was deleted"}'
        return 200, b'{"ok":true,"result":true,"description":"Webhook is already deleted"}'

    def webhook_info(self, bot: BotState) -> Result:
        info: dict[str, Any] = {
            "url": bot.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(bot.queue),
        }
        if bot.webhook_url:
            info["max_connections"] = bot.webhook_max_connections
        return ok(info)

    def close(self) -> None:
        """Answer every pending long poll with [] (used on shutdown)."""
        for bot in self.bots.values():
            bot.resolve_waiter(EMPTY_UPDATES)


def _expire(fut: asyncio.Future[Result]) -> None:
    if not fut.done():
        fut.set_result(EMPTY_UPDATES)
