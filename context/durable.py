"""Durable context in PostgreSQL: history (`messages`) and per-chat state (`chat_state`:
dialog, prefs, handoff mark and `stamp`, the time of the chat's newest durable change).

`enqueue_nowait` / `enqueue_state_nowait` never block a handler; one writer task drains
the queue in batches, each batch one transaction (rows that arrive while a batch
commits form the next batch, so there is no timer). States are coalesced per chat: only
the newest is written. When PostgreSQL is down the batch stays queued and is retried
with backoff; the rest of the system keeps serving. Runs in the worker's event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Final

import asyncpg
import orjson
import structlog

from context.aio import wait_first
from context.model import Message, recent_history

log = structlog.get_logger(__name__)

#: Errors that mean "PostgreSQL is not answering".
PG_DOWN: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_INSERT: Final = """
INSERT INTO messages (bot_id, chat_id, role, content, created_at)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[])
"""

_HISTORY: Final = """
SELECT role, content, extract(epoch FROM created_at)::float8 AS ts
FROM messages
WHERE bot_id = $1 AND chat_id = $2 AND created_at > now() - $3::float8 * interval '1 second'
ORDER BY seq DESC
LIMIT $4
"""

#: One row per chat: `stamp` only grows; dialog/prefs only move forward in `state_stamp`
#: (a row carrying messages only has state_stamp 0 and leaves them alone).
_UPSERT_STATE: Final = """
INSERT INTO chat_state AS s (bot_id, chat_id, stamp, state_stamp, dialog, prefs, handoff)
SELECT b, c, st, ss, d::jsonb, p::jsonb, d::jsonb -> 'handoff'
FROM unnest($1::bigint[], $2::bigint[], $3::float8[], $4::float8[], $5::text[], $6::text[])
     AS u(b, c, st, ss, d, p)
ON CONFLICT (bot_id, chat_id) DO UPDATE SET
    stamp = greatest(s.stamp, excluded.stamp),
    dialog = CASE WHEN excluded.state_stamp >= s.state_stamp AND excluded.state_stamp > 0
                  THEN excluded.dialog ELSE s.dialog END,
    prefs = CASE WHEN excluded.state_stamp >= s.state_stamp AND excluded.state_stamp > 0
                 THEN excluded.prefs ELSE s.prefs END,
    handoff = CASE WHEN excluded.state_stamp >= s.state_stamp AND excluded.state_stamp > 0
                   THEN excluded.handoff ELSE s.handoff END,
    state_stamp = greatest(s.state_stamp, excluded.state_stamp),
    updated_at = now()
"""

_STATE: Final = """
SELECT stamp, state_stamp, dialog::text AS dialog, prefs::text AS prefs
FROM chat_state WHERE bot_id = $1 AND chat_id = $2
"""

#: chats of a bot under operator handoff (the partial index chat_state_handoff)
_HANDED_OFF: Final = """
SELECT chat_id, handoff::text AS handoff, stamp
FROM chat_state
WHERE bot_id = $1 AND handoff IS NOT NULL AND stamp > extract(epoch FROM now()) - $2::float8
ORDER BY stamp DESC
LIMIT $3
"""

Row = tuple[int, int, Message]
ChatKey = tuple[int, int]


@dataclass(frozen=True, slots=True)
class ChatState:
    """A chat's durable state: `stamp` of its newest durable change; dialog and prefs as
    of `state_stamp` (0: never written, use what else is known)."""

    stamp: float
    state_stamp: float = 0.0
    dialog: Mapping[str, Any] | None = None
    prefs: Mapping[str, Any] | None = None

    def newer(self, other: ChatState | None) -> ChatState:
        """`self` with the other's stamp if later (for a state queued on top of a row)."""
        if other is None:
            return self
        top = self if self.state_stamp >= other.state_stamp else other
        return ChatState(max(self.stamp, other.stamp), top.state_stamp, top.dialog, top.prefs)


class DurableLog:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        timeout_s: float,
        batch_max: int = 1000,
        queue_max: int = 500_000,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._batch_max = batch_max
        self._queue_max = queue_max
        self._backoff_max_s = backoff_max_s
        self._queue: deque[Row] = deque()
        self._by_chat: dict[ChatKey, deque[Message]] = {}  # the same rows, per chat
        self._states: dict[ChatKey, ChatState] = {}  # newest state per chat, not yet written
        self._inflight: dict[ChatKey, ChatState] = {}  # states of the batch committing now
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.degraded = False
        #: Called when `degraded` flips (the store turns it into a health change).
        self.on_change: Callable[[], None] = _nothing
        self.written = 0
        self.dropped = 0
        self.errors = 0

    def __len__(self) -> int:
        return len(self._queue) + len(self._states) + len(self._inflight)

    def enqueue_nowait(self, bot_id: int, chat_id: int, messages: Iterable[Message]) -> None:
        """Queue rows for the writer task. Past `queue_max` rows, new ones are dropped loudly."""
        q = self._queue
        for m in messages:
            if len(q) >= self._queue_max:
                self.dropped += 1
                if self.dropped % 1000 == 1:
                    log.error("context.durable_queue_full", dropped=self.dropped)
                continue
            q.append((bot_id, chat_id, m))
            chat = self._by_chat.get((bot_id, chat_id))
            if chat is None:
                chat = self._by_chat[(bot_id, chat_id)] = deque()
            chat.append(m)
        if q:
            self._idle.clear()
            self._wake.set()

    def enqueue_state_nowait(self, bot_id: int, chat_id: int, state: ChatState) -> None:
        """Queue a chat's dialog/prefs (the newest per chat wins) for the writer task."""
        key = (bot_id, chat_id)
        self._states[key] = state.newer(self._states.get(key))
        self._idle.clear()
        self._wake.set()

    def pending_state(self, bot_id: int, chat_id: int) -> ChatState | None:
        """The chat's state not yet known to be committed (None: nothing queued)."""
        key = (bot_id, chat_id)
        queued, inflight = self._states.get(key), self._inflight.get(key)
        if queued is None:
            return inflight
        return queued.newer(inflight)

    async def state(self, bot_id: int, chat_id: int, timeout: float | None = None) -> ChatState:
        """The chat's committed `chat_state` (stamp 0: no row). Raises PG_DOWN."""
        async with asyncio.timeout(timeout or self._timeout_s):
            row = await self._pool.fetchrow(_STATE, bot_id, chat_id)
        if row is None:
            return ChatState(0.0)
        return ChatState(
            row["stamp"], row["state_stamp"], _mapping(row["dialog"]), _mapping(row["prefs"])
        )

    async def handed_off(
        self, bot_id: int, limit: int, max_age_s: float
    ) -> list[tuple[int, Mapping[str, Any], float]]:
        """(chat id, handoff mark, time of its newest change) of the bot's chats a human
        has, newest first; a mark older than `max_age_s` has lapsed. Raises PG_DOWN."""
        async with asyncio.timeout(self._timeout_s):
            rows = await self._pool.fetch(_HANDED_OFF, bot_id, float(max_age_s), limit)
        return [(r["chat_id"], _mapping(r["handoff"]), r["stamp"]) for r in rows]

    def has_pending(self, bot_id: int, chat_id: int) -> bool:
        """Whether rows or a state of the chat are not yet known to be committed."""
        key = (bot_id, chat_id)
        return key in self._by_chat or key in self._states or key in self._inflight

    def pending_for(self, bot_id: int, chat_id: int) -> list[Message]:
        """Rows of one chat not yet known to be committed (including a batch in flight)."""
        return list(self._by_chat.get((bot_id, chat_id), ()))

    async def history(
        self, bot_id: int, chat_id: int, limit: int, max_age_s: float
    ) -> list[Message]:
        """The chat's newest rows (reset markers included), newest first. Raises PG_DOWN."""
        async with asyncio.timeout(self._timeout_s):
            rows = await self._pool.fetch(_HISTORY, bot_id, chat_id, float(max_age_s), limit)
        return [Message(r["role"], r["content"], round(r["ts"], 6)) for r in rows]

    async def recent(
        self, bot_id: int, chat_id: int, limit: int, max_age_s: float
    ) -> tuple[Message, ...]:
        """The chat's messages since its last reset: committed rows plus rows still queued
        (read before and after the query, so a batch committing meanwhile is not missed),
        each once, oldest first. Raises PG_DOWN."""
        before = self.pending_for(bot_id, chat_id)
        rows = await self.history(bot_id, chat_id, limit, max_age_s)
        return recent_history(rows, before + self.pending_for(bot_id, chat_id), limit)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued row is committed; False if `timeout` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """The writer task: until `stop` is set and the queue is empty (or PostgreSQL is down)."""
        delay = 0.1
        while True:
            if not self._queue and not self._states:
                self._idle.set()
                if stop.is_set():
                    return
                self._wake.clear()
                await wait_first(self._wake, stop)
                continue
            if await self._write_batch():
                delay = 0.1
                continue
            if stop.is_set():
                return  # shutting down with PostgreSQL down: the rows are lost, and logged
            await wait_first(stop, timeout=delay)
            delay = min(delay * 2, self._backoff_max_s)

    async def _write_batch(self) -> bool:
        batch = list(islice(self._queue, self._batch_max))
        self._inflight, self._states = self._states, {}
        cols: tuple[list[int], list[int], list[str], list[str], list[datetime]] = (
            [],
            [],
            [],
            [],
            [],
        )
        stamps: dict[ChatKey, ChatState] = {}
        for bot_id, chat_id, m in batch:
            cols[0].append(bot_id)
            cols[1].append(chat_id)
            cols[2].append(m.role)
            cols[3].append(m.content)
            cols[4].append(datetime.fromtimestamp(m.ts, UTC))
            key = (bot_id, chat_id)
            stamps[key] = ChatState(m.ts).newer(stamps.get(key))
        for key, st in self._inflight.items():
            stamps[key] = st.newer(stamps.get(key))
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._pool.acquire() as conn, conn.transaction():
                    if batch:
                        await conn.execute(_INSERT, *cols)
                    if stamps:
                        await conn.execute(_UPSERT_STATE, *_state_columns(stamps))
        except PG_DOWN as exc:
            for key, st in self._inflight.items():  # back in the queue, under newer ones
                self._states[key] = self._states[key].newer(st) if key in self._states else st
            self._inflight = {}
            self.errors += 1
            if not self.degraded:
                log.warning("context.postgres_degraded", error=type(exc).__name__, queued=len(self))
                self.degraded = True
                self.on_change()
            return False
        self._inflight = {}
        for _ in batch:
            bot_id, chat_id, _m = self._queue.popleft()
            chat = self._by_chat[(bot_id, chat_id)]
            chat.popleft()
            if not chat:
                del self._by_chat[(bot_id, chat_id)]
        self.written += len(batch)
        if self.degraded:
            self.degraded = False
            log.info("context.postgres_recovered", queued=len(self))
            self.on_change()
        return True


def _state_columns(
    stamps: Mapping[ChatKey, ChatState],
) -> tuple[list[int], list[int], list[float], list[float], list[str], list[str]]:
    bots, chats, st, ss, dialogs, prefs = [], [], [], [], [], []
    for (bot_id, chat_id), s in stamps.items():
        bots.append(bot_id)
        chats.append(chat_id)
        st.append(s.stamp)
        ss.append(s.state_stamp)
        dialogs.append(orjson.dumps(dict(s.dialog or {})).decode())
        prefs.append(orjson.dumps(dict(s.prefs or {})).decode())
    return bots, chats, st, ss, dialogs, prefs


def _mapping(raw: str | None) -> Mapping[str, Any]:
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _nothing() -> None:
    pass
