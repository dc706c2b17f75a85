"""The books of one emulator: its bots, the counters the control API reports, and the
waits tests hang on them.

`Books` is the base of `EmulatorState` (emulators/telegram/state.py): it owns every field;
the Bot API methods that change them live in updates.py and messages.py. Everything runs
on one event loop thread.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Callable
from typing import Any

from emulators.telegram.bots import BotState, ChatState
from emulators.telegram.limits import RateLimits, Window
from emulators.telegram.results import Result


class Books:
    """All bots of one emulator and the counters the control API reports."""

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        sent_log_limit: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits if limits is not None else RateLimits()
        #: Arrival-time clock for flood windows, stats and latencies (tests may swap it).
        self.clock = clock
        self.sent_log_limit = sent_log_limit
        self.bots: dict[int, BotState] = {}
        self.by_token: dict[str, BotState] = {}
        self._next_index = 1
        self.injected = 0
        self.replied = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.sent = 0
        self.telegram_429 = 0
        self.conflicts = 0
        self.get_updates_total = 0
        self.latencies_ms: array[float] = array("d")
        #: a Telegram outage: every Bot API request answers this error until `until`
        self.outage: tuple[Result, float] | None = None
        self.outage_answers = 0
        self.get_me_total = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        #: called when a bot's webhook changes or a bot with a webhook gets updates
        #: (emulators/telegram/webhooks.py delivers them)
        self.on_webhook: Callable[[BotState], None] | None = None

    def _chat(self, bot: BotState, chat_id: int) -> ChatState:
        """The bot's chat, made on first sight with the flood window of its kind."""
        chat = bot.chats.get(chat_id)
        if chat is None:
            limit = self.limits.per_chat if chat_id > 0 else self.limits.per_group
            chat = ChatState(chat_id, None if limit is None else Window(limit))
            bot.chats[chat_id] = chat
        return chat

    # ------------------------------------------------------------------ control / stats

    def stats(self, per_bot: bool = True) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        totals = {
            "bots": len(self.bots),
            "injected": self.injected,
            "replied": self.replied,
            "lost": self.injected - self.replied,
            "duplicates": self.duplicates,
            "outage_answers": self.outage_answers,
            "get_me": self.get_me_total,
            "out_of_order": self.out_of_order,
            "sent": self.sent,
            "telegram_429": self.telegram_429,
            "conflicts": self.conflicts,
            "get_updates": self.get_updates_total,
            "polling_now": sum(1 for bot in self.bots.values() if bot.polling_now),
            "webhooks_set": sum(1 for bot in self.bots.values() if bot.webhook_url),
            "p50_ms": _percentile(ordered, 0.50),
            "p99_ms": _percentile(ordered, 0.99),
        }
        out: dict[str, Any] = {"now": self.clock(), "totals": totals}
        if per_bot:
            out["bots"] = {str(bot.id): bot.stats() for bot in self.bots.values()}
        return out

    def chat_stats(self, bot_id: int) -> dict[str, dict[str, int]] | None:
        bot = self.bots.get(bot_id)
        if bot is None:
            return None
        return {str(chat.id): chat.stats() for chat in bot.chats.values()}

    def sent_log(self, bot_id: int) -> list[dict[str, Any]] | None:
        bot = self.bots.get(bot_id)
        if bot is None:
            return None
        return [
            {"chat_id": chat_id, "text": text, "reply_to": reply_to, "at": at}
            for chat_id, text, reply_to, at in bot.sent_log
        ]

    def polling_since(self, since: float) -> int:
        """Bots whose latest getUpdates arrived after `since` (monotonic seconds)."""
        return sum(
            1
            for bot in self.bots.values()
            if bot.last_poll_at is not None and bot.last_poll_at > since
        )

    def reset_stats(self) -> None:
        """Zero counters, latencies and sent logs; bots, queues and flood windows stay."""
        self.injected = 0
        self.replied = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.sent = 0
        self.telegram_429 = 0
        self.conflicts = 0
        self.get_updates_total = 0
        self.latencies_ms = array("d")
        for bot in self.bots.values():
            bot.reset_stats()

    # ------------------------------------------------------------------ waiting (tests)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; it is re-checked whenever a long poll starts or
        ends (no polling). Wrap in `asyncio.wait_for` / `asyncio.timeout` for a bound."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._watchers.append(entry)
        try:
            await fut
        finally:
            if entry in self._watchers:
                self._watchers.remove(entry)

    async def wait_polling(self, bot_id: int, polling: bool = True) -> None:
        """Return once bot `bot_id` has (or, with `polling=False`, no longer has) a pending
        getUpdates."""
        bot = self.bots[bot_id]
        await self.wait_until(lambda: bot.polling_now is polling)

    def _notify(self) -> None:
        for entry in list(self._watchers):
            predicate, fut = entry
            if fut.done():
                self._watchers.remove(entry)
            elif predicate():
                fut.set_result(None)
                self._watchers.remove(entry)


def _percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    rank = max(1, math.ceil(p * len(ordered)))
    return round(ordered[rank - 1], 3)
