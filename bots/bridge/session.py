"""An aiogram `BaseSession` that sends every method through the bot's limited API.

So a Router's `message.answer(...)`, `bot.send_photo(...)` or `callback.answer()` takes
the same path as a built-in handler's reply: the worker's HTTP pool, the bot's limiter
(per bot; per chat or group for methods that post messages), 429s and transient errors
retried, errors mapped once. aiogram's own exception types come out, so handlers written
for aiogram keep catching what they catch; the botvisor error is the `__cause__`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Final

from aiogram.client.session.base import BaseSession
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from pydantic import TypeAdapter

from bots.bridge.params import NotPlain, request_params
from bots.telegram.errors import BotNetworkError, RetryAfter, TelegramError
from bots.telegram.limited import LimitedApi

if TYPE_CHECKING:
    from aiogram import Bot

#: Methods that post a message into a chat: they count against the chat's (or group's)
#: limit too. Everything else (edits, answers, deletes, chat actions) counts per bot.
_POSTING: Final = frozenset({"copyMessage", "copyMessages", "forwardMessage", "forwardMessages"})

_BY_CODE: Final[dict[int, type[TelegramAPIError]]] = {
    400: TelegramBadRequest,
    401: TelegramUnauthorizedError,
    403: TelegramForbiddenError,
    404: TelegramNotFound,
    409: TelegramConflictError,
    413: TelegramEntityTooLarge,
}


@functools.lru_cache(maxsize=256)
def _adapter(returning: Any) -> TypeAdapter[Any]:
    """The result's validator, one per return type (what `Response[T]` would build)."""
    return TypeAdapter(returning)


def posts_to_chat(method: str) -> bool:
    return (method.startswith("send") and method != "sendChatAction") or method in _POSTING


class UploadNotSupported(TelegramAPIError):
    """The bridge sends JSON: files go by file_id or URL, not as uploads."""


class BridgeSession(BaseSession):
    """One per aiogram `Bot`, i.e. one per bot that runs a Router (built lazily)."""

    def __init__(self, api: LimitedApi) -> None:
        super().__init__()
        self.api_of_bot = api

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        name = method.__api_method__
        files: dict[str, Any] = {}
        try:
            params = request_params(
                method, lambda v: self.prepare_value(v, bot=bot, files=files, _dumps_json=False)
            )
        except NotPlain:
            files.clear()
            params = self._generic_params(bot, method, files)
        if files:
            raise UploadNotSupported(
                method, "file uploads are not supported by botvisor's bridge; send a file_id or URL"
            )
        chat = params.get("chat_id")
        chat_id = chat if isinstance(chat, int) and posts_to_chat(name) else None
        try:
            result = await self.api_of_bot.send(name, params, chat_id)
        except RetryAfter as exc:
            raise TelegramRetryAfter(method, exc.description, int(exc.retry_after)) from exc
        except TelegramError as exc:
            if exc.code >= 500:
                raise TelegramServerError(method, exc.description) from exc
            raise _BY_CODE.get(exc.code, TelegramAPIError)(method, exc.description) from exc
        except BotNetworkError as exc:
            raise TelegramNetworkError(method, exc.cause) from exc
        return _adapter(method.__returning__).validate_python(result, context={"bot": bot})  # type: ignore[no-any-return]

    def _generic_params(
        self, bot: Bot, method: TelegramMethod[TelegramType], files: dict[str, Any]
    ) -> dict[str, Any]:
        """aiogram's own way (its AiohttpSession's), for what `request_params` leaves."""
        params: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files, _dumps_json=False)
            if prepared is not None:
                params[key] = prepared
        return params

    async def close(self) -> None:
        """The HTTP pool is the worker's; nothing of ours to close."""

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        """File downloads are not bridged (the bridge's Bot does not hold the token)."""
        raise TelegramNetworkError(None, "file downloads are not supported by the bridge")  # type: ignore[arg-type]
        yield b""  # pragma: no cover - makes this an async generator
