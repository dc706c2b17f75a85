"""What handlers get instead of `BotApi`: every Bot API method passes the bot's limiter.

`BotApi.call` (one raw request, no limiter) stays internal to the actor's handshake and
the poll; handlers, built-in or plugins, and the aiogram bridge only ever see this.
"""

from __future__ import annotations

from typing import Any

from bots.telegram.api import BotApi
from bots.telegram.errors import RetryAfter


class LimitedApi:
    """One bot's Bot API as a handler sees it. Cheap: one per handled update."""

    __slots__ = ("_api",)

    def __init__(self, api: BotApi) -> None:
        self._api = api

    @property
    def bot_id(self) -> int:
        return self._api.bot_id

    def same(self, api: LimitedApi) -> bool:
        """Whether both wrap the same client (the actor was not rebuilt in between)."""
        return self._api is api._api

    async def send(self, method: str, params: dict[str, Any], chat_id: int | None) -> Any:
        """Any method: the limiter (per bot, and per chat/group when `chat_id` is given),
        429 and transient errors retried (`BotApi.send`). Raises TelegramError or
        BotNetworkError once retries are spent."""
        return await self._api.send(method, params, chat_id)

    async def send_message(
        self, chat_id: int, text: str, *, reply_to: int | None = None, **extra: Any
    ) -> Any:
        return await self._api.send_message(chat_id, text, reply_to=reply_to, **extra)

    async def once(
        self, method: str, params: dict[str, Any], chat_id: int | None, *, timeout: float
    ) -> Any:
        """Best effort (chat actions, deletes): passes the limiter, one try, no retry. A 429
        still slows the bot and chat down for the next sends."""
        limiter = self._api.limiter
        granted = await limiter.acquire(chat_id, hold=True)
        try:
            return await self._api.call(method, params, timeout=timeout)
        except RetryAfter as exc:
            self._api.stats.telegram_429 += 1
            limiter.penalize(chat_id, exc.retry_after)
            raise
        finally:
            limiter.settle(chat_id, granted)
