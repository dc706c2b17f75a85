"""Async client of the emulator's control API (`/control/...`).

    async with EmulatorControl("http://127.0.0.1:8081") as emu:
        bots = await emu.create_bots(3)
        await emu.inject([{"bot_id": bots[0].id, "chat_id": 42, "text": "hi"}])
        totals = (await emu.stats(per_bot=False))["totals"]

Every call has a timeout (`timeout`, default 10 s) and raises `ControlError`
on a non-2xx answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NotRequired, TypedDict

import aiohttp
import orjson

_JSON = {"Content-Type": "application/json"}


class InjectMessage(TypedDict):
    """One message to inject as a `message` update."""

    bot_id: int
    chat_id: int
    text: str
    user_id: NotRequired[int]


@dataclass(frozen=True, slots=True)
class EmulatorBot:
    id: int
    token: str
    username: str

    def __repr__(self) -> str:  # never print the secret part
        return f"EmulatorBot(id={self.id}, token='{self.id}:***', username={self.username!r})"


class ControlError(Exception):
    """The control API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"emulator control: HTTP {status}: {message}")
        self.status = status
        self.message = message


class EmulatorControl:
    """Typed client of one emulator's control API. Use as an async context manager
    (or call `close()`); the session is created lazily on first use."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EmulatorControl:
        self._ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        seconds: float | None = None,
    ) -> Any:
        session = self._ensure_session()
        tmo = self._timeout if seconds is None else aiohttp.ClientTimeout(total=seconds)
        async with session.request(
            method,
            f"{self.base_url}/control/{path}",
            data=None if body is None else orjson.dumps(body),
            headers=_JSON if body is not None else None,
            params=params,
            timeout=tmo,
        ) as resp:
            raw = await resp.read()
            status = resp.status
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise ControlError(status, raw[:200].decode(errors="replace")) from None
        if status >= 300:
            message = payload.get("error", "") if isinstance(payload, dict) else str(payload)
            raise ControlError(status, str(message))
        return payload

    # ------------------------------------------------------------------ API

    async def create_bots(
        self, n: int = 0, *, tokens: Iterable[str] | None = None
    ) -> list[EmulatorBot]:
        """`n` new bots with generated tokens, plus one per given token."""
        body: dict[str, Any] = {"count": n}
        if tokens is not None:
            body["tokens"] = list(tokens)
        payload = await self._request("POST", "bots", body)
        return [
            EmulatorBot(int(b["id"]), str(b["token"]), str(b["username"])) for b in payload["bots"]
        ]

    async def inject(self, messages: Iterable[InjectMessage | Mapping[str, Any]]) -> list[int]:
        """Queue `message` updates; returns their update_ids in order."""
        payload = await self._request("POST", "inject", {"messages": list(messages)})
        return [int(i) for i in payload["update_ids"]]

    async def inject_one(
        self, bot_id: int, chat_id: int, text: str, user_id: int | None = None
    ) -> int:
        msg: dict[str, Any] = {"bot_id": bot_id, "chat_id": chat_id, "text": text}
        if user_id is not None:
            msg["user_id"] = user_id
        return (await self.inject([msg]))[0]

    async def create_chats(self, bot_id: int, count: int, first_id: int = 1) -> int:
        """Private chats `first_id`… `first_id + count - 1` known to the bot."""
        body = {"bot_id": bot_id, "count": count, "first_id": first_id}
        payload = await self._request("POST", "chats", body)
        return int(payload["created"])

    async def block(self, bot_id: int, chat_id: int, reason: str = "blocked") -> None:
        """sendMessage to the chat answers Telegram's 403 from now on: "blocked" (by the
        user), "deactivated" (user is deactivated), "kicked" (group), "none" (unblock)."""
        await self._request(
            "POST", "block", {"bot_id": bot_id, "chat_id": chat_id, "reason": reason}
        )

    async def revoke(self, bot_id: int) -> None:
        await self._request("POST", "revoke", {"bot_id": bot_id})

    async def outage(self, code: int, seconds: float, retry_after: int | None = None) -> None:
        """Telegram down: every Bot API request answers `code` (429 or 5xx) for `seconds`."""
        body: dict[str, Any] = {"code": code, "seconds": seconds}
        if retry_after is not None:
            body["retry_after"] = retry_after
        await self._request("POST", "outage", body)

    async def stats(self, per_bot: bool = True) -> dict[str, Any]:
        """`{"now", "totals": {...}, "bots": {str(bot_id): {...}}}` (no "bots" if not per_bot)."""
        result: dict[str, Any] = await self._request(
            "GET", "stats", params=None if per_bot else {"bots": "0"}
        )
        return result

    async def totals(self) -> dict[str, Any]:
        """Shortcut for `(await stats(per_bot=False))["totals"]`."""
        totals: dict[str, Any] = (await self.stats(per_bot=False))["totals"]
        return totals

    async def chat_stats(self, bot_id: int) -> dict[int, dict[str, int]]:
        """`{chat_id: {"sent", "telegram_429", "max_in_1s"}}`."""
        payload = await self._request("GET", f"chats/{bot_id}")
        return {int(k): v for k, v in payload.items()}

    async def sent(self, bot_id: int) -> list[dict[str, Any]]:
        """Messages the bot sent (most recent `sent_log_limit`): chat_id, text, reply_to, at."""
        result: list[dict[str, Any]] = await self._request("GET", f"bots/{bot_id}/sent")
        return result

    async def press(
        self, bot_id: int, chat_id: int, message_id: int, data: str, user_id: int | None = None
    ) -> str:
        """A user presses an inline button with `data` under message `message_id`: queues a
        `callback_query` update; returns the query's id."""
        body: dict[str, Any] = {
            "bot_id": bot_id,
            "chat_id": chat_id,
            "message_id": message_id,
            "data": data,
        }
        if user_id is not None:
            body["user_id"] = user_id
        payload = await self._request("POST", "callback_query", body)
        return str(payload["callback_query_id"])

    async def calls(self, bot_id: int) -> list[dict[str, Any]]:
        """The bot's callback answers, edits and keyboard messages (method, …), oldest first."""
        result: list[dict[str, Any]] = await self._request("GET", f"bots/{bot_id}/calls")
        return result

    async def reset_stats(self) -> None:
        await self._request("POST", "reset_stats", {})

    async def polling_since(self, t: float) -> int:
        """How many bots sent a getUpdates after emulator-monotonic time `t`."""
        payload = await self._request("GET", "polling", params={"since": repr(t)})
        return int(payload["count"])

    async def now(self) -> float:
        """The emulator's monotonic clock (to pass to `polling_since` later)."""
        return float((await self.stats(per_bot=False))["now"])
