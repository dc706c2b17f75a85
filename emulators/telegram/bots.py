"""One bot and its chats as the emulator keeps them: update queue, pending long poll,
webhook settings, flood windows, message ids and counters (no I/O)."""

from __future__ import annotations

import asyncio
from collections import deque
from itertools import islice
from typing import Any, Final

from emulators.telegram.limits import Burst, Window
from emulators.telegram.results import Result

_UPDATES_HEAD: Final = b'{"ok":true,"result":['
_UPDATES_TAIL: Final = b"]}"

#: Sentinel a pending poll's future resolves to when new updates were queued.
WAKE: Final[Result] = (0, b"")


class ChatState:
    """One (bot, chat) pair: message ids, its flood window, its stats."""

    __slots__ = (
        "blocked",
        "burst",
        "deleted",
        "id",
        "injected",
        "max_ref",
        "next_message_id",
        "sent",
        "telegram_429",
        "window",
    )

    def __init__(self, chat_id: int, window: Window | None) -> None:
        self.id = chat_id
        self.next_message_id = 1
        self.window = window
        self.burst: Burst | None = None
        self.sent = 0
        self.telegram_429 = 0
        # message_id -> inject time (monotonic); -1.0 once replied to.
        self.injected: dict[int, float] | None = None
        # highest message_id answered so far (first replies only), for out_of_order.
        self.max_ref = 0
        #: message ids removed with deleteMessage
        self.deleted: set[int] | None = None
        #: the 403 sendMessage answers instead of sending (the user blocked the bot...)
        self.blocked: Result | None = None

    def reset_stats(self) -> None:
        self.sent = 0
        self.telegram_429 = 0
        self.burst = None
        self.injected = None
        self.max_ref = 0

    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "telegram_429": self.telegram_429,
            "max_in_1s": 0 if self.burst is None else self.burst.peak,
        }


class BotState:
    """One bot: identity, update queue, pending long poll, webhook, counters."""

    __slots__ = (
        "burst",
        "chats",
        "conflicts",
        "first_name",
        "first_poll_at",
        "get_updates",
        "id",
        "last_poll_at",
        "next_update_id",
        "queue",
        "revoked",
        "sent",
        "sent_log",
        "telegram_429",
        "token",
        "user",
        "username",
        "waiter",
        "webhook_max_connections",
        "webhook_secret",
        "webhook_url",
        "window",
    )

    def __init__(self, bot_id: int, token: str, window: Window | None, sent_log_limit: int) -> None:
        self.id = bot_id
        self.token = token
        self.username = f"emu{bot_id}_bot"
        self.first_name = f"Emu {bot_id}"
        self.user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }
        self.revoked = False
        self.queue: deque[tuple[int, bytes]] = deque()
        self.next_update_id = 1
        self.waiter: asyncio.Future[Result] | None = None
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.webhook_max_connections = 40
        self.chats: dict[int, ChatState] = {}
        self.window = window
        self.burst = Burst()
        self.sent = 0
        self.telegram_429 = 0
        self.conflicts = 0
        self.get_updates = 0
        self.first_poll_at: float | None = None
        self.last_poll_at: float | None = None
        self.sent_log: deque[tuple[int, str, int | None, float]] = deque(maxlen=sent_log_limit)

    @property
    def polling_now(self) -> bool:
        return self.waiter is not None and not self.waiter.done()

    def resolve_waiter(self, result: Result) -> bool:
        """Finish the pending long poll (if any) with `result`."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(result)
            self.waiter = None
            return True
        return False

    def confirm(self, offset: int) -> None:
        """Telegram offset semantics: forget updates below `offset`; -N keeps the last N."""
        queue = self.queue
        if offset > 0:
            while queue and queue[0][0] < offset:
                queue.popleft()
        elif offset < 0:
            keep = -offset
            while len(queue) > keep:
                queue.popleft()

    def take(self, limit: int) -> Result:
        parts = [body for _, body in islice(self.queue, limit)]
        return 200, _UPDATES_HEAD + b",".join(parts) + _UPDATES_TAIL

    def reset_stats(self) -> None:
        self.burst.reset()
        self.sent = 0
        self.telegram_429 = 0
        self.conflicts = 0
        self.get_updates = 0
        self.first_poll_at = None
        self.last_poll_at = None
        self.sent_log.clear()
        for chat in self.chats.values():
            chat.reset_stats()

    def stats(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "telegram_429": self.telegram_429,
            "max_in_1s": self.burst.peak,
            "conflicts": self.conflicts,
            "get_updates": self.get_updates,
            "first_poll_at": self.first_poll_at,
            "last_poll_at": self.last_poll_at,
            "polling_now": self.polling_now,
            "pending_updates": len(self.queue),
            "revoked": self.revoked,
        }
