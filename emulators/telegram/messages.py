"""Messages a bot sends: sendMessage through the flood windows (429 with retry_after),
deleteMessage, and the chats tests set up (known chats, blocked chats).

sendMessage also keeps the books on replies to injected messages: latency, duplicates,
out-of-order answers.
"""

from __future__ import annotations

import math
import time
from typing import Any

from emulators.telegram.books import Books
from emulators.telegram.bots import BotState
from emulators.telegram.limits import Burst
from emulators.telegram.results import (
    BLOCKED,
    MESSAGE_NOT_FOUND,
    OK_TRUE,
    InjectError,
    Result,
    error,
    ok,
)


class Messages(Books):
    """sendMessage, deleteMessage and the chat set-up of `EmulatorState`."""

    def create_chats(self, bot_id: int, count: int, first_id: int = 1) -> list[int]:
        """`count` private chats `first_id`, `first_id + 1`, … known to the bot (tests and
        benchmarks: a broadcast's audience without injecting a message into each)."""
        bot = self.bots.get(bot_id)
        if bot is None:
            raise InjectError(f"unknown bot_id {bot_id}")
        if count < 0 or first_id < 1:
            raise InjectError("count must be >= 0 and first_id >= 1 (private chats)")
        ids = list(range(first_id, first_id + count))
        for chat_id in ids:
            self._chat(bot, chat_id)
        return ids

    def block(self, bot_id: int, chat_id: int, reason: str = "blocked") -> None:
        """From now on sendMessage to the chat answers Telegram's 403 for `reason`
        ("blocked": the user blocked the bot, "deactivated": the account was deleted,
        "kicked": the bot was removed from the group, "none": unblock)."""
        bot = self.bots.get(bot_id)
        if bot is None:
            raise InjectError(f"unknown bot_id {bot_id}")
        if reason not in BLOCKED:
            raise InjectError(f"reason must be one of {', '.join(sorted(BLOCKED))}")
        self._chat(bot, chat_id).blocked = BLOCKED[reason]

    def send_message(self, bot: BotState, chat_id: int, text: str, reply_to: int | None) -> Result:
        """sendMessage after the flood windows; stats on replies to injected messages."""
        now = self.clock()
        chat = bot.chats.get(chat_id)
        if chat is None:
            chat = self._chat(bot, chat_id)
        if chat.blocked is not None:
            return chat.blocked
        wait = 0.0
        if bot.window is not None:
            wait = bot.window.wait(now)
        if chat.window is not None:
            wait = max(wait, chat.window.wait(now))
        if wait > 0.0:
            bot.telegram_429 += 1
            chat.telegram_429 += 1
            self.telegram_429 += 1
            retry = max(1, math.ceil(wait))
            return error(429, f"Too Many Requests: retry after {retry}", retry)
        if bot.window is not None:
            bot.window.record(now)
        if chat.window is not None:
            chat.window.record(now)
        bot.sent += 1
        chat.sent += 1
        self.sent += 1
        bot.burst.add(now)
        burst = chat.burst
        if burst is None:
            burst = chat.burst = Burst()
        burst.add(now)
        bot.sent_log.append((chat_id, text, reply_to, now))

        # Reply accounting. `out_of_order` looks at first replies only (a reply to a message
        # older than one already answered in this chat); repeats count as `duplicates`.
        if reply_to is not None and chat.injected is not None:
            injected_at = chat.injected.get(reply_to)
            if injected_at is not None:
                if injected_at >= 0.0:
                    chat.injected[reply_to] = -1.0
                    self.replied += 1
                    self.latencies_ms.append((now - injected_at) * 1000.0)
                    if reply_to < chat.max_ref:
                        self.out_of_order += 1
                    else:
                        chat.max_ref = reply_to
                else:
                    self.duplicates += 1
        if self._watchers:
            # tests wait for sends too (wait_until), and for the books they change: after
            # them, or the last reply of a fleet that never long-polls is never seen
            self._notify()

        message_id = chat.next_message_id
        chat.next_message_id = message_id + 1
        return ok(
            {
                "message_id": message_id,
                "from": bot.user,
                "chat": _chat_object(chat_id),
                "date": int(time.time()),
                "text": text,
            }
        )

    def delete_message(self, bot: BotState, chat_id: int, message_id: int) -> Result:
        """deleteMessage: any existing message of the chat, once (Telegram's 400 after)."""
        chat = bot.chats.get(chat_id)
        if chat is None or not 0 < message_id < chat.next_message_id:
            return MESSAGE_NOT_FOUND
        if chat.deleted is None:
            chat.deleted = set()
        if message_id in chat.deleted:
            return MESSAGE_NOT_FOUND
        chat.deleted.add(message_id)
        return OK_TRUE

    def deleted_messages(self, bot_id: int, chat_id: int) -> frozenset[int]:
        """Ids deleteMessage removed from the chat (tests)."""
        chat = self.bots[bot_id].chats.get(chat_id)
        return frozenset(chat.deleted or ()) if chat is not None else frozenset()


def _chat_object(chat_id: int) -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private"}
    return {"id": chat_id, "type": "group"}
