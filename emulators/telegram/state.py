"""In-memory state of the Bot API emulator: bots, update queues, rate windows, stats.

Everything here runs on one event loop thread and does O(1) work per request
(O(limit) for getUpdates). Pending long polls are plain futures resolved by
whoever has news for them (inject, a newer getUpdates, setWebhook, revoke, a
timer); nothing polls or sleeps.

Results are `(http_status, body_bytes)` pairs so the HTTP layer only copies
them out.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

import orjson
import structlog

log = structlog.get_logger(__name__)

#: `<bot_id>:<35 chars>`, as BotFather issues them.
TOKEN_RE: Final = re.compile(r"([0-9]{1,20}):[A-Za-z0-9_-]{35}")
#: First id handed out by `create_bots`: 7000000001, 7000000002, ...
BOT_ID_BASE: Final = 7_000_000_000
#: The Bot API server caps long-poll timeouts at 50 s (Client.h LONG_POLL_MAX_TIMEOUT).
LONG_POLL_MAX_TIMEOUT: Final = 50.0
#: Telegram's maximum message length.
MAX_TEXT: Final = 4096

#: (HTTP status, JSON body)
Result = tuple[int, bytes]


def error(code: int, description: str, retry_after: int | None = None) -> Result:
    """A Telegram-shaped error body."""
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return code, orjson.dumps(body)


def ok(result: Any) -> Result:
    return 200, orjson.dumps({"ok": True, "result": result})


NOT_FOUND: Final = error(404, "Not Found")
#: sendMessage's 403s for a chat that cannot be written to, by `block` reason (exact bodies)
BLOCKED: Final[dict[str, Result | None]] = {
    "blocked": error(403, "Forbidden: bot was blocked by the user"),
    "deactivated": error(403, "Forbidden: user is deactivated"),
    "kicked": error(403, "Forbidden: bot was kicked from the group chat"),
    "none": None,
}
UNAUTHORIZED: Final = error(401, "Unauthorized")
CONFLICT_GET_UPDATES: Final = error(
    409,
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
)
CONFLICT_SET_WEBHOOK: Final = error(409, "Conflict: terminated by setWebhook request")
CONFLICT_WEBHOOK_ACTIVE: Final = error(
    409,
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first",
)
TEXT_EMPTY: Final = error(400, "Bad Request: message text is empty")
TEXT_TOO_LONG: Final = error(400, "Bad Request: message is too long")
CHAT_ID_EMPTY: Final = error(400, "Bad Request: chat_id is empty")
CHAT_NOT_FOUND: Final = error(400, "Bad Request: chat not found")
MESSAGE_NOT_FOUND: Final = error(400, "Bad Request: message to delete not found")
EMPTY_UPDATES: Final[Result] = (200, b'{"ok":true,"result":[]}')
OK_TRUE: Final[Result] = (200, b'{"ok":true,"result":true}')

_UPDATES_HEAD: Final = b'{"ok":true,"result":['
_UPDATES_TAIL: Final = b"]}"


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` messages in any `period`-second sliding window."""

    count: int
    period: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.period <= 0:
            raise ValueError(f"bad limit {self.count}/{self.period}: need count>=1, period>0")

    @classmethod
    def parse(cls, text: str) -> Limit:
        """`"30/1"` -> Limit(30, 1.0)."""
        count, _, period = text.partition("/")
        try:
            return cls(int(count), float(period or "1"))
        except ValueError:
            raise ValueError(f"bad limit {text!r}: expected COUNT/SECONDS, e.g. 30/1") from None

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}"


LimitSpec = Limit | tuple[int, float] | str | None


def as_limit(spec: LimitSpec) -> Limit | None:
    if spec is None or isinstance(spec, Limit):
        return spec
    if isinstance(spec, str):
        return Limit.parse(spec)
    return Limit(int(spec[0]), float(spec[1]))


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Telegram's sendMessage flood limits; `None` disables one."""

    per_bot: Limit | None = Limit(30, 1.0)
    per_chat: Limit | None = Limit(1, 1.0)
    per_group: Limit | None = Limit(20, 60.0)

    @classmethod
    def off(cls) -> RateLimits:
        return cls(None, None, None)

    @classmethod
    def of(
        cls,
        per_bot: LimitSpec = Limit(30, 1.0),
        per_chat: LimitSpec = Limit(1, 1.0),
        per_group: LimitSpec = Limit(20, 60.0),
        *,
        enabled: bool = True,
    ) -> RateLimits:
        if not enabled:
            return cls.off()
        return cls(as_limit(per_bot), as_limit(per_chat), as_limit(per_group))

    def as_dict(self) -> dict[str, str | None]:
        return {
            "per_bot": None if self.per_bot is None else str(self.per_bot),
            "per_chat": None if self.per_chat is None else str(self.per_chat),
            "per_group": None if self.per_group is None else str(self.per_group),
        }


class Window:
    """Sliding window as a ring of the last `count` accepted times: O(1) check and record.

    A message at `now` is allowed iff the count-th most recent accepted message
    is at least `period` seconds old.
    """

    __slots__ = ("_idx", "_period", "_ring")

    def __init__(self, limit: Limit) -> None:
        self._ring = [-math.inf] * limit.count
        self._idx = 0
        self._period = limit.period

    def wait(self, now: float) -> float:
        """Seconds until one more message fits (<= 0: fits now)."""
        return self._ring[self._idx] + self._period - now

    def record(self, now: float) -> None:
        ring = self._ring
        ring[self._idx] = now
        self._idx = (self._idx + 1) % len(ring)


class Burst:
    """Peak number of events in any 1-second window (list + head index, amortised O(1))."""

    __slots__ = ("_head", "_times", "peak")

    def __init__(self) -> None:
        self._times: list[float] = []
        self._head = 0
        self.peak = 0

    def add(self, now: float) -> None:
        times = self._times
        times.append(now)
        cutoff = now - 1.0
        head = self._head
        while times[head] <= cutoff:
            head += 1
        n = len(times) - head
        if head > 64 and head > n:
            del times[:head]
            head = 0
        self._head = head
        if n > self.peak:
            self.peak = n

    def reset(self) -> None:
        self._times.clear()
        self._head = 0
        self.peak = 0


# --------------------------------------------------------------------------- bots and chats


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


#: Sentinel a pending poll's future resolves to when new updates were queued.
_WAKE: Final[Result] = (0, b"")


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


class InjectError(ValueError):
    """A control request named an unknown bot or carried a malformed message."""


def _percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    rank = max(1, math.ceil(p * len(ordered)))
    return round(ordered[rank - 1], 3)


def _chat_object(chat_id: int) -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private"}
    return {"id": chat_id, "type": "group"}


# --------------------------------------------------------------------------- the emulator


class EmulatorState:
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

    # ------------------------------------------------------------------ inbound

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
                bot.resolve_waiter(_WAKE)
        return ids

    def _chat(self, bot: BotState, chat_id: int) -> ChatState:
        chat = bot.chats.get(chat_id)
        if chat is None:
            limit = self.limits.per_chat if chat_id > 0 else self.limits.per_group
            chat = ChatState(chat_id, None if limit is None else Window(limit))
            bot.chats[chat_id] = chat
        return chat

    # ------------------------------------------------------------------ Bot API methods

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
            if result is not _WAKE:
                return result
            bot.confirm(offset)
            if bot.queue:
                return bot.take(limit)
            if loop.time() >= deadline:  # woken for updates below our offset, time is up
                return EMPTY_UPDATES

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

    def close(self) -> None:
        """Answer every pending long poll with [] (used on shutdown)."""
        for bot in self.bots.values():
            bot.resolve_waiter(EMPTY_UPDATES)


def _expire(fut: asyncio.Future[Result]) -> None:
    if not fut.done():
        fut.set_result(EMPTY_UPDATES)
