"""In-memory state of the Bot API emulator: `EmulatorState`, no I/O.

It is assembled from one module per concern, all sharing the fields of `Books`:

- books.py: bots, counters, stats and the waits tests hang on them
- updates.py: inject, getUpdates long polls, setWebhook / deleteWebhook
- messages.py: sendMessage through the flood windows, deleteMessage, chat set-up
- here: bot identities and tokens (create, reissue, revoke, authenticate, getMe), outages

The pieces it keeps: bots.py (`BotState`, `ChatState`), limits.py (flood windows) and
results.py (`(http_status, body_bytes)` answers).
"""

from __future__ import annotations

import re
import secrets
from typing import Final

import structlog

from emulators.telegram.bots import BotState
from emulators.telegram.limits import Window
from emulators.telegram.messages import Messages
from emulators.telegram.results import NOT_FOUND, UNAUTHORIZED, InjectError, Result, error, ok
from emulators.telegram.updates import Updates

log = structlog.get_logger(__name__)

#: `<bot_id>:<35 chars>`, as BotFather issues them.
TOKEN_RE: Final = re.compile(r"([0-9]{1,20}):[A-Za-z0-9_-]{35}")
#: First id handed out by `create_bots`: 7000000001, 7000000002, ...
BOT_ID_BASE: Final = 7_000_000_000


class EmulatorState(Updates, Messages):
    """All bots of one emulator: the Bot API methods (updates.py, messages.py, getMe
    here), the control API's bot set-up and outages, the counters it reports (books.py)."""

    # ------------------------------------------------------------------ outages

    def start_outage(self, code: int, seconds: float, retry_after: int | None = None) -> None:
        """Answer every Bot API request with `code` for `seconds` (429 with retry_after,
        5xx like Telegram's front end when the Bot API is down). 0 seconds ends it."""
        if code == 429:
            ra = retry_after if retry_after is not None else 5
            result = error(429, f"Too Many Requests: retry after {ra}", ra)
        elif code >= 500:
            result = error(
                code,
                {502: "Bad Gateway", 503: "Service Unavailable"}.get(code, "Internal Server Error"),
            )
        else:
            raise ValueError("outage code must be 429 or 5xx")
        self.outage = (result, self.clock() + seconds) if seconds > 0 else None
        if self.outage is not None:
            for bot in self.bots.values():  # parked long polls end with the error too
                if bot.resolve_waiter(result):
                    self.outage_answers += 1

    def outage_answer(self) -> Result | None:
        """The error to answer now, or None when Telegram is up."""
        if self.outage is None:
            return None
        result, until = self.outage
        if self.clock() >= until:
            self.outage = None
            return None
        self.outage_answers += 1
        return result

    # ------------------------------------------------------------------ bots

    def _new_bot(self, bot_id: int, token: str) -> BotState:
        per_bot = self.limits.per_bot
        bot = BotState(
            bot_id, token, None if per_bot is None else Window(per_bot), self.sent_log_limit
        )
        self.bots[bot_id] = bot
        self.by_token[token] = bot
        return bot

    def create_bots(self, count: int) -> list[BotState]:
        """`count` new bots with ids 7000000001.. and random 35-char secrets."""
        made = []
        for _ in range(count):
            bot_id = BOT_ID_BASE + self._next_index
            self._next_index += 1
            if bot_id in self.bots:
                continue
            made.append(self._new_bot(bot_id, f"{bot_id}:{secrets.token_urlsafe(27)[:35]}"))
        return made

    def add_token(self, token: str) -> BotState:
        """Register a given token. Same token again: the existing bot. Same bot id with a
        new token: the token is reissued (the old one stops working, as after /revoke)."""
        match = TOKEN_RE.fullmatch(token)
        if match is None:
            raise InjectError("token must be <bot_id>:<35 chars of [A-Za-z0-9_-]>")
        existing = self.by_token.get(token)
        if existing is not None:
            return existing
        bot_id = int(match.group(1))
        old = self.bots.get(bot_id)
        if old is None:
            return self._new_bot(bot_id, token)
        del self.by_token[old.token]
        old.resolve_waiter(UNAUTHORIZED)
        old.token = token
        old.revoked = False
        self.by_token[token] = old
        return old

    def revoke(self, bot_id: int) -> bool:
        bot = self.bots.get(bot_id)
        if bot is None:
            return False
        bot.revoked = True
        bot.resolve_waiter(UNAUTHORIZED)
        log.info("emulator.bot_revoked", bot_id=bot_id)
        return True

    def authenticate(self, token: str) -> BotState | Result:
        """The bot for `token`, else 404 (malformed) or 401 (unknown or revoked)."""
        bot = self.by_token.get(token)
        if bot is None:
            return UNAUTHORIZED if TOKEN_RE.fullmatch(token) else NOT_FOUND
        if bot.revoked:
            return UNAUTHORIZED
        return bot

    def get_me(self, bot: BotState) -> Result:
        self.get_me_total += 1
        return ok(
            {
                "id": bot.id,
                "is_bot": True,
                "first_name": bot.first_name,
                "username": bot.username,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )
