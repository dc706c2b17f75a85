"""Webhook delivery of the emulator, shaped like the Bot API server's WebhookActor.

While a bot has a webhook, its queued updates are POSTed over kept-alive connections
(emulators/telegram/webhook_client.py; JSON, header
`X-Telegram-Bot-Api-Secret-Token` when a secret is set) to the webhook URL: sequential
per chat (only the head of a chat's FIFO is in flight), at most `max_connections` at
once per bot. An update is removed from the queue on a 2xx; any other answer (or no
answer) retries it after a delay that doubles from `retry_base_s` up to `retry_max_s`,
or after the answer's Retry-After (capped at 3600 s like Telegram). An update still
undelivered `retention_s` after its first attempt is dropped (Telegram: 24 h).
deleteWebhook ends the delivery; what is left is there for getUpdates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog

from emulators.telegram.webhook_client import WebhookClient

if TYPE_CHECKING:
    from emulators.telegram.bots import BotState

log = structlog.get_logger(__name__)

SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
#: Telegram clamps a webhook's Retry-After to an hour
RETRY_AFTER_MAX_S: Final = 3600.0
#: one POST's timeout (Telegram's is about a minute)
POST_TIMEOUT_S: Final = 60.0


@dataclass(slots=True)
class WebhookPolicy:
    """How delivery retries; small values in tests."""

    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    retention_s: float = 86_400.0


@dataclass(slots=True)
class _Retry:
    attempts: int = 0
    first_at: float = 0.0
    next_at: float = 0.0


@dataclass(slots=True)
class WebhookStats:
    posts: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retry_after_honoured: int = 0
    #: the highest concurrency seen for one bot
    max_in_flight: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class _BotDelivery:
    """One bot's delivery loop. Runs in its own task while the webhook is set."""

    def __init__(self, sender: WebhookSender, bot: BotState) -> None:
        self.sender = sender
        self.bot = bot
        self.url = bot.webhook_url
        self.wake = asyncio.Event()
        self.retries: dict[int, _Retry] = {}
        self.busy_chats: set[int] = set()
        self.in_flight: dict[int, asyncio.Task[None]] = {}  # update id -> its POST
        self.last_error: tuple[int, str] | None = None
        self.task: asyncio.Task[None] | None = None
        self.client = WebhookClient(self.url) if self.url else None
        #: update id -> its chat, parsed once (the queue is scanned at every wake)
        self.chats: dict[int, int] = {}
        self._secret: tuple[str, bytes] = ("", b"")

    def active(self) -> bool:
        return self.bot.webhook_url == self.url and bool(self.url)

    async def run(self) -> None:
        try:
            while self.active():
                self.wake.clear()
                next_at = self._start_due()
                timeout = None if next_at is None else max(0.0, next_at - time.monotonic())
                with suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self.wake.wait()
        finally:
            # posts in flight finish (a 2xx still counts as delivered, as at Telegram)
            if self.in_flight:
                await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
            if self.client is not None:
                self.client.close()

    def _start_due(self) -> float | None:
        """Start every POST allowed now; returns when the next retry falls due."""
        bot, policy, stats = self.bot, self.sender.policy, self.sender.stats
        now = time.monotonic()
        next_at: float | None = None
        limit = max(1, bot.webhook_max_connections)
        seen_chats: set[int] = set()
        dropped: list[tuple[int, bytes]] = []
        for item in bot.queue:
            if len(self.in_flight) >= limit:
                break
            update_id, body = item
            chat = self.chats.get(update_id)
            if chat is None:
                chat = self.chats[update_id] = _chat_of(body)
            if update_id in self.in_flight:
                seen_chats.add(chat)
                continue
            if chat in seen_chats or chat in self.busy_chats:
                continue  # an older update of this chat goes first
            seen_chats.add(chat)
            retry = self.retries.get(update_id)
            if retry is not None:
                if now - retry.first_at > policy.retention_s:
                    dropped.append(item)
                    seen_chats.discard(chat)
                    continue
                if retry.next_at > now:
                    next_at = retry.next_at if next_at is None else min(next_at, retry.next_at)
                    continue
            self.busy_chats.add(chat)
            task = asyncio.create_task(self._post(update_id, chat, body))
            self.in_flight[update_id] = task
            stats.max_in_flight = max(stats.max_in_flight, len(self.in_flight))
        for item in dropped:
            with suppress(ValueError):
                bot.queue.remove(item)
            self.retries.pop(item[0], None)
            self.chats.pop(item[0], None)
            stats.dropped += 1
            log.info("emulator.webhook_dropped", bot_id=bot.id, update_id=item[0])
        if dropped:
            self.wake.set()
            self.sender.changed.set()
        return next_at

    def _secret_header(self) -> bytes:
        secret = self.bot.webhook_secret or ""
        if self._secret[0] != secret:
            line = f"{SECRET_HEADER}: {secret}\r\n".encode() if secret else b""
            self._secret = (secret, line)
        return self._secret[1]

    async def _post(self, update_id: int, chat: int, body: bytes) -> None:
        sender, stats = self.sender, self.sender.stats
        status, retry_after = 0, None
        stats.posts += 1
        try:
            assert self.client is not None  # a delivery runs only for a URL
            status, raw = await self.client.post(body, self._secret_header(), POST_TIMEOUT_S)
            if raw is not None:
                with suppress(ValueError):
                    retry_after = min(RETRY_AFTER_MAX_S, max(0.0, float(raw)))
        except (TimeoutError, OSError) as exc:
            self.last_error = (int(time.time()), f"Connection failed: {type(exc).__name__}")
        finally:
            self.busy_chats.discard(chat)
            self.in_flight.pop(update_id, None)
            stats.by_status[status] = stats.by_status.get(status, 0) + 1
            if 200 <= status < 300:
                stats.delivered += 1
                self.retries.pop(update_id, None)
                self.chats.pop(update_id, None)
                with suppress(ValueError):
                    self.bot.queue.remove((update_id, body))
            else:
                stats.failed += 1
                if status:
                    self.last_error = (
                        int(time.time()),
                        f"Wrong response from the webhook: {status}",
                    )
                now = time.monotonic()
                retry = self.retries.get(update_id)
                if retry is None:
                    retry = self.retries[update_id] = _Retry(first_at=now)
                retry.attempts += 1
                policy = sender.policy
                delay = min(policy.retry_max_s, policy.retry_base_s * 2 ** (retry.attempts - 1))
                if retry_after is not None:
                    stats.retry_after_honoured += 1
                    delay = retry_after
                retry.next_at = now + delay
            self.wake.set()
            sender.changed.set()


def _chat_of(body: bytes) -> int:
    """The chat an update belongs to (Telegram's webhook queue id); 0 when it has none."""
    try:
        update: Any = orjson.loads(body)
        for value in update.values():
            if isinstance(value, dict):
                chat = value.get("chat") or (value.get("message") or {}).get("chat")
                if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                    return int(chat["id"])
                sender = value.get("from")
                if isinstance(sender, dict) and isinstance(sender.get("id"), int):
                    return int(sender["id"])
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return 0


class WebhookSender:
    """Every bot's delivery. Runs in the emulator's event loop."""

    def __init__(self, policy: WebhookPolicy | None = None) -> None:
        self.policy = policy or WebhookPolicy()
        self.stats = WebhookStats()
        self._bots: dict[int, _BotDelivery] = {}
        #: set after every delivery attempt and drop (`wait_until`)
        self.changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, re-checked after each attempt (tests)."""
        while not predicate():
            self.changed.clear()
            await self.changed.wait()

    def notify(self, bot: BotState) -> None:
        """The bot's webhook was set or changed, or it has new updates."""
        delivery = self._bots.get(bot.id)
        if delivery is not None and delivery.task is not None and not delivery.task.done():
            if delivery.active():
                delivery.wake.set()
                return
            delivery.wake.set()  # the old URL's loop ends on its own
        if not bot.webhook_url:
            return
        delivery = _BotDelivery(self, bot)
        self._bots[bot.id] = delivery
        delivery.task = asyncio.get_running_loop().create_task(
            delivery.run(), name=f"emulator:webhook:{bot.id}"
        )

    def last_error(self, bot_id: int) -> tuple[int, str] | None:
        delivery = self._bots.get(bot_id)
        return None if delivery is None else delivery.last_error

    def as_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "posts": s.posts,
            "delivered": s.delivered,
            "failed": s.failed,
            "dropped": s.dropped,
            "retry_after_honoured": s.retry_after_honoured,
            "max_in_flight": s.max_in_flight,
            "by_status": {str(k): v for k, v in s.by_status.items()},
        }

    async def close(self) -> None:
        # POSTs first: a delivery loop's exit waits for its POSTs (up to their timeout)
        posts = [t for d in self._bots.values() for t in d.in_flight.values()]
        for t in posts:
            t.cancel()
        tasks = [d.task for d in self._bots.values() if d.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*posts, *tasks, return_exceptions=True)
        for delivery in self._bots.values():
            if delivery.client is not None:
                delivery.client.close()


def policy_of(
    retry_base_s: float | None, retry_max_s: float | None, retention_s: float | None
) -> WebhookPolicy:
    p = WebhookPolicy()
    if retry_base_s is not None:
        p.retry_base_s = retry_base_s
    if retry_max_s is not None:
        p.retry_max_s = retry_max_s
    if retention_s is not None:
        p.retention_s = retention_s
    return p


Notify = Callable[["BotState"], None]
