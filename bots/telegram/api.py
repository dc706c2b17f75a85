"""The Bot API seam: every request of every bot goes through `BotApi.call`.

Telegram errors are mapped once, here, into domain errors (bots/telegram/errors.py);
network errors are re-raised without the URL (it holds the token) as `BotNetworkError`.
Sending methods also pass the bot's limiter here, so nothing can bypass it.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
from python_socks import ProxyError

from bots.telegram.errors import (
    NOT_SENT,
    BotNetworkError,
    RetryAfter,
    ServerError,
    network_cause,
    telegram_error,
)
from bots.telegram.http1 import HttpProtocolError
from bots.telegram.longpoll import DIRECT, LongPoll
from bots.telegram.net import NetOptions
from bots.telegram.send_pool import SendPool
from bots.telegram.token import BotToken
from ratelimit import BotLimiter

_JSON: Final = {"Content-Type": "application/json"}

#: Messages sent by the current task (a chat's handler run): an update whose handler
#: already sent something is never run again, so a retry cannot answer twice.
SENT_IN_TASK: Final[ContextVar[int]] = ContextVar("botvisor_sent_in_task", default=0)


#: Longest wait between two tries of a send after a 5xx or a network error.
SEND_BACKOFF_MAX_S: Final = 2.0


@functools.lru_cache(maxsize=64)
def _client_timeout(total: float) -> aiohttp.ClientTimeout:
    """One shared timeout object per value: the poll path asks for the same one each time."""
    return aiohttp.ClientTimeout(total=total)


class BotApi:
    """One bot's Bot API client over the worker's shared HTTP pool. Runs in the actor's tasks."""

    __slots__ = (
        "_limiter",
        "_max_retries",
        "_send_deadline_s",
        "_head",
        "_poll",
        "_request_timeout",
        "_sender",
        "_session",
        "_timeout",
        "_url",
        "bot_id",
        "fence",
        "stats",
    )

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_base: str,
        token: BotToken,
        limiter: BotLimiter,
        *,
        request_timeout: float,
        max_retries: int,
        send_deadline_s: float = 0.0,
        net: NetOptions = DIRECT,
        sender: SendPool | None = None,
    ) -> None:
        self._session = session
        #: every JSON call goes through the worker's lean pool when it has one; aiohttp
        #: (`session`) serves multipart calls, and every call of one-off clients and tests
        self._sender = sender
        self._head = sender.head(token.reveal()) if sender is not None else b""
        self._url = f"{api_base.rstrip('/')}/bot{token.reveal()}/"
        self._poll = LongPoll(api_base, token.reveal(), net)
        # per socket operation, not in total: waiting for a free pooled connection during a
        # burst is not Telegram being slow, and a send timed out after Telegram took it
        # would be sent again (an answer twice)
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=request_timeout, sock_read=request_timeout
        )
        self._request_timeout = request_timeout
        self._limiter = limiter
        self._max_retries = max_retries
        #: past max_retries, sends keep retrying until this long after their first try
        self._send_deadline_s = send_deadline_s
        self.bot_id = token.bot_id
        self.stats = ApiStats()
        #: set by the actor: returns at once unless this host may have lost the bot's
        #: shard (ipc/fencing.py), then waits for a renewal; a stop cancels the wait
        self.fence: Callable[[], Awaitable[None]] | None = None

    @property
    def limiter(self) -> BotLimiter:
        return self._limiter

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """One request, no limiter, no retry. Raises TelegramError or BotNetworkError."""
        body = orjson.dumps(params) if params else b"{}"
        sender = self._sender
        if sender is not None:
            try:
                status, body = await sender.post(
                    self._head, method, body, self._request_timeout if timeout is None else timeout
                )
            except (OSError, TimeoutError, HttpProtocolError) as exc:
                raise BotNetworkError(self.bot_id, method, network_cause(exc, sender.net)) from None
            return self._answer(method, status, body)
        tmo = self._timeout if timeout is None else _client_timeout(timeout)
        try:
            async with self._session.post(
                self._url + method,
                data=body,
                headers=_JSON,
                timeout=tmo,
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ProxyError, EOFError) as exc:
            # `from None`: aiohttp's exceptions print the URL, which holds the token.
            raise BotNetworkError(self.bot_id, method, network_cause(exc, self._poll.net)) from None
        return self._answer(method, status, body)

    async def call_form(
        self, method: str, params: dict[str, Any], file_field: str, path: Path
    ) -> Any:
        """A multipart call uploading the file at `path` (setWebhook's certificate)."""
        form = aiohttp.FormData()
        for key, value in params.items():
            form.add_field(key, value if isinstance(value, str) else orjson.dumps(value).decode())
        try:
            content = await asyncio.to_thread(path.read_bytes)
            form.add_field(file_field, content, filename=path.name)
            async with self._session.post(
                self._url + method, data=form, timeout=self._timeout
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BotNetworkError(self.bot_id, method, type(exc).__name__) from None
        return self._answer(method, status, body)

    async def poll(self, params: dict[str, Any], *, timeout: float) -> Any:
        """getUpdates over the bot's own lean keep-alive connection (see bots.telegram.longpoll)."""
        try:
            status, raw = await self._poll.post(orjson.dumps(params), timeout)
        except (OSError, TimeoutError, HttpProtocolError) as exc:
            raise BotNetworkError(
                self.bot_id, "getUpdates", network_cause(exc, self._poll.net)
            ) from None
        return self._answer("getUpdates", status, raw)

    async def open_poll(self, *, timeout: float) -> None:
        """Connect the getUpdates connection (bots.telegram.longpoll) without polling."""
        try:
            await self._poll.connect(timeout)
        except (OSError, TimeoutError) as exc:
            raise BotNetworkError(
                self.bot_id, "getUpdates", network_cause(exc, self._poll.net)
            ) from None

    def close_poll(self) -> None:
        """Drop the poll connection (the actor stopped); the next poll opens a new one."""
        self._poll.close()

    def _answer(self, method: str, status: int, body: bytes) -> Any:
        """Telegram's answer mapped once: the result, or the matching domain error."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ServerError(
                self.bot_id, method, status, f"non-JSON answer (HTTP {status})"
            ) from None
        if status == 200 and isinstance(payload, dict) and payload.get("ok") is True:
            return payload.get("result")
        raise telegram_error(self.bot_id, method, status, payload)

    async def send(self, method: str, params: dict[str, Any], chat_id: int | None) -> Any:
        """A message-sending call: passes the limiter, retries 429s and transient errors.

        A 429 sets a deadline on the chat and the bot (never a shared Event), then the
        call waits its turn again; at most `max_retries` retries, then the error is raised.
        """
        attempt = 0
        give_up_at = time.monotonic() + self._send_deadline_s
        while True:
            granted = await self._limiter.acquire(chat_id, hold=True)
            try:
                if self.fence is not None:
                    await self.fence()  # a handler begun before a long pause sends nothing
                result = await self.call(method, params)
            except RetryAfter as exc:
                self.stats.telegram_429 += 1
                self._limiter.penalize(chat_id, exc.retry_after)
                if attempt >= self._max_retries and time.monotonic() + exc.retry_after > give_up_at:
                    raise
            except (BotNetworkError, ServerError):
                # capped like the poll's backoff: the actor polls again only once its
                # sends are done, so a long send backoff would outlast a Telegram outage
                base = min(0.2 * 2**attempt, SEND_BACKOFF_MAX_S)
                delay = base * (0.75 + 0.5 * random.random())  # noqa: S311 - jitter
                if attempt >= self._max_retries and time.monotonic() + delay > give_up_at:
                    raise
                await asyncio.sleep(delay)
            else:
                self.stats.sent += 1
                SENT_IN_TASK.set(SENT_IN_TASK.get() + 1)
                return result
            finally:
                # count the message from its answer, not its grant (see Window.settle)
                self._limiter.settle(chat_id, granted)
            attempt += 1

    async def send_bulk(
        self,
        method: str,
        params: dict[str, Any],
        chat_id: int,
        *,
        on_grant: Callable[[], None] | None = None,
    ) -> Any:
        """A broadcast's send: the limiter's bulk lane (replies go first), 429s waited out
        and retried, and nothing else retried: a 5xx or a lost answer may mean Telegram
        delivered it, and a broadcast sends each chat at most once. Only a connection
        that never opened is tried again. `on_grant` runs when the request is about to
        leave (before it, a cancelled call sent nothing). Raises TelegramError or
        BotNetworkError."""
        attempt = 0
        while True:
            granted = await self._limiter.acquire(chat_id, hold=True, bulk=True)
            if on_grant is not None:
                on_grant()
            try:
                result = await self.call(method, params)
            except RetryAfter as exc:
                self.stats.telegram_429 += 1
                self._limiter.penalize(chat_id, exc.retry_after)
            except BotNetworkError as exc:
                if exc.cause not in NOT_SENT or attempt >= self._max_retries:
                    raise
                await asyncio.sleep(min(0.2 * 2**attempt, SEND_BACKOFF_MAX_S))
            else:
                self.stats.sent += 1
                return result
            finally:
                self._limiter.settle(chat_id, granted)
            attempt += 1

    async def send_message(
        self, chat_id: int, text: str, *, reply_to: int | None = None, **extra: Any
    ) -> Any:
        params: dict[str, Any] = {"chat_id": chat_id, "text": text, **extra}
        if reply_to is not None:
            params["reply_parameters"] = {
                "message_id": reply_to,
                "allow_sending_without_reply": True,
            }
        return await self.send("sendMessage", params, chat_id)


class ApiStats:
    """Counters of one bot's calls; the worker sums them into heartbeats and metrics."""

    __slots__ = ("sent", "telegram_429")

    def __init__(self) -> None:
        self.sent = 0
        self.telegram_429 = 0


async def fetch_me(
    session: aiohttp.ClientSession, api_base: str, token: BotToken, timeout: float = 10.0
) -> dict[str, Any]:
    """getMe for a token being registered. Raises TokenRejected for a dead token."""
    from ratelimit import Limits

    api = BotApi(
        session,
        api_base,
        token,
        BotLimiter(Limits.telegram_defaults()),
        request_timeout=timeout,
        max_retries=0,
    )
    me = await api.call("getMe")
    if not isinstance(me, dict):
        raise ServerError(token.bot_id, "getMe", 200, "result is not an object")
    return me
