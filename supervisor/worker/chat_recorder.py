"""The worker's chat recorder: every chat its bots hear from, written to `chats` in batches.

`observe` runs in an actor's chat task for every update: a dict write, no I/O. `run`
(a must-live worker service) writes what was observed once per `chats.flush_interval_s`
in one statement for all bots, never a query per update. Memory is bounded
(`chats.pending_max` chats waiting; a chat already waiting is only updated). While
PostgreSQL is away the batch is kept and retried at the next tick; replies never wait
for any of this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

import asyncpg
import structlog

from config import Settings
from supervisor.registry.chats import SeenChat, record_chats
from supervisor.worker.ticker import ticker

log = structlog.get_logger(__name__)

_MESSAGE_KINDS: Final = ("message", "edited_message", "channel_post", "edited_channel_post")
#: what "PostgreSQL did not take the batch" looks like here
_DB_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def chat_of(raw: dict[str, Any]) -> tuple[int, str, str | None, bool] | None:
    """(chat id, type, title or name, blocked) of an update, or None if it names no chat.

    A my_chat_member "kicked" in a private chat is Telegram telling the bot it was
    blocked; anything else from a chat means the bot can write there.
    """
    member = raw.get("my_chat_member")
    if isinstance(member, dict):
        chat = member.get("chat")
        new = member.get("new_chat_member")
        status = new.get("status") if isinstance(new, dict) else None
        blocked = status in ("kicked", "left")
    else:
        chat = None
        for kind in _MESSAGE_KINDS:
            msg = raw.get(kind)
            if isinstance(msg, dict):
                chat = msg.get("chat")
                break
        else:
            query = raw.get("callback_query")
            msg = query.get("message") if isinstance(query, dict) else None
            chat = msg.get("chat") if isinstance(msg, dict) else None
        blocked = False
    if not isinstance(chat, dict):
        return None
    chat_id = chat.get("id")
    if not isinstance(chat_id, int) or chat_id == 0:
        return None
    chat_type = chat.get("type")
    raw_title = chat.get("title")
    title: str | None = raw_title if isinstance(raw_title, str) else None
    if title is None:
        names = [chat.get("first_name"), chat.get("last_name")]
        title = " ".join(n for n in names if isinstance(n, str)) or None
    return chat_id, chat_type if isinstance(chat_type, str) else "private", title, blocked


class ChatRecorder:
    """Runs in the worker's event loop."""

    def __init__(self, pool: asyncpg.Pool, settings: Callable[[], Settings]) -> None:
        self._pool = pool
        self._settings = settings
        self._pending: dict[tuple[int, int], SeenChat] = {}
        #: `chats.pending_max`, read by each flush of waiting chats rather than per update
        self._pending_max = settings().chats.pending_max
        #: chats not taken because `pending_max` were already waiting (seen again later)
        self.skipped = 0
        #: chats written so far, and flushes PostgreSQL refused in a row (kept and retried)
        self.written = 0
        self.failures = 0

    def __len__(self) -> int:
        return len(self._pending)

    def observe(self, bot_id: int, raw: dict[str, Any]) -> None:
        """Runs in an actor's chat task; never blocks, never raises on odd updates."""
        found = chat_of(raw)
        if found is None:
            return
        chat_id, kind, title, blocked = found
        key = (bot_id, chat_id)
        if key not in self._pending and len(self._pending) >= self._pending_max:
            self.skipped += 1
            return
        self._pending[key] = SeenChat(bot_id, chat_id, kind, title, time.time(), blocked)

    async def run(self) -> None:
        """The worker's service: flush every interval; a last flush when cancelled."""
        try:
            async for _ in ticker(self._settings().chats.flush_interval_s):
                await self.flush()
        finally:
            # bounded: a draining worker must not hang on an absent PostgreSQL
            await asyncio.shield(self.flush(timeout=1.0))

    async def flush(self, timeout: float | None = None) -> bool:
        """Write every waiting chat in one statement; False (batch kept) if PostgreSQL
        did not take it."""
        if not self._pending:
            return True
        batch, self._pending = self._pending, {}
        s = self._settings()
        self._pending_max = s.chats.pending_max
        try:
            await record_chats(self._pool, list(batch.values()), timeout or s.database.timeout_s)
        except _DB_ERRORS as exc:
            self.failures += 1
            # observations made meanwhile are newer: they win over the kept batch
            for key, seen in batch.items():
                self._pending.setdefault(key, seen)
            if self.failures == 1:  # once per outage: the context store warns of it already
                log.info("chats.write_failed", chats=len(batch), error=type(exc).__name__)
            return False
        if self.failures:
            log.info("chats.write_recovered", failed_flushes=self.failures)
            self.failures = 0
        self.written += len(batch)
        return True
