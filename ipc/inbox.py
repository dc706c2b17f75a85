"""The durable inbox: polled updates in a per-shard Redis Stream until they are handled.

`{prefix}inbox:{shard}` (shard = bot_id % workers.shards) holds one entry per update,
fields `b` (bot id), `t` (wall time polled) and `u` (the update's JSON). A poller appends
a batch (pipelined with the other pollers' batches of the moment) and only then confirms
it to Telegram (its next getUpdates offset passes the batch). The worker that owns the shard reads the
stream in its consumer group (`{prefix}inbox`, XREADGROUP), hands each entry to the
bot's actor and, once the handler finished, acknowledges and deletes it (XACK + XDEL,
coalesced and pipelined by `run()`), so a stream holds only unhandled updates.

Entries pending longer than `claim_idle_s` — their reader died (SIGKILL), restarted or
lost the shard — are taken over with XAUTOCLAIM by whoever reads the shard now; the
bot's progress record (ipc/offsets.py) says which of them were answered already.

An append that times out has its batch handled directly (see bots/actor/inbox_poll.py),
but a hung Redis still holds the request and runs it once it wakes: that entry would
bring back an update already answered (a worker that exited meanwhile could not save
its progress record either). So a batch is appended by a script that refuses it once the
server's clock has passed the poller's deadline (`APPEND`): an append lands in time or
never.

Here: the pollers' appends and the acknowledgements; the reads are `InboxReads`
(ipc/inbox_reads.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog

from ipc import keys
from ipc.inbox_reads import InboxReads

log = structlog.get_logger(__name__)

#: An append is refused by the server this long before its caller gives up, so one the
#: caller gave up on never lands (it covers the hosts' clock skew, NTP-synced: ms).
APPEND_MARGIN_S = 0.5

#: KEYS[1] the shard's stream; ARGV: deadline (server wall clock, µs), bot id, polled at,
#: then one update JSON each. Returns 1 (appended) or 0 (past the deadline: nothing).
APPEND = """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000000 + tonumber(now[2]) > tonumber(ARGV[1]) then
    return 0
end
for i = 4, #ARGV do
    redis.call('XADD', KEYS[1], '*', 'b', ARGV[2], 't', ARGV[3], 'u', ARGV[i])
end
return 1
"""
#: Acknowledgements per pipelined write.
ACK_CHUNK = 1000
#: Pollers' batches per pipelined append.
APPEND_CHUNK = 500

REDIS_ERRORS = (aioredis.RedisError, OSError, TimeoutError)


class AppendTooLate(TimeoutError):
    """The server ran an append past its deadline and refused it: nothing was appended."""


class Inbox(InboxReads):
    """One per worker, in its event loop: the pollers append, the reader reads and acks."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        shards_total: int,
        consumer: str,
        timeout_s: float,
        backlog_max: int,
        claim_idle_s: float,
    ) -> None:
        self._redis = redis
        #: pollers' batches waiting for `_send_appends`: (stream key, script args, answer)
        self._appends: list[tuple[str, list[Any], asyncio.Future[Any]]] = []
        self._appender: asyncio.Task[None] | None = None
        self._prefix = prefix
        self._group = keys.inbox_group(prefix)
        self.shards_total = shards_total
        self.consumer = consumer
        self.timeout_s = timeout_s
        self.backlog_max = backlog_max
        self.claim_idle_s = claim_idle_s
        self._groups: set[int] = set()  # shards whose group is known to exist
        self._backlog: dict[int, int] = {}  # per shard: appended here, not yet acked
        self._room: asyncio.Event | None = None
        self._acks: dict[int, list[bytes]] = {}
        self._wake = asyncio.Event()
        self._flushed: asyncio.Event | None = None  # created while someone waits
        #: the last append failed (its batch took the confirm-after-handling path)
        self.degraded = False
        #: the shard owner's reader could read at its last attempt
        self.reading = True
        self.appended = 0
        self.acked = 0
        self.acks_queued = 0
        self.round_trips = 0
        self.fallbacks = 0

    def shard_of(self, bot_id: int) -> int:
        return bot_id % self.shards_total

    # -- pollers ----------------------------------------------------------------------------

    async def append(self, bot_id: int, updates: list[dict[str, Any]]) -> bool:
        """One script call per batch (`APPEND`), pipelined with the other pollers' batches
        of the moment (`_send_appends`). False on any Redis fault: the caller then handles
        the batch the old way. A request the server runs only after our deadline appends
        nothing, so a batch given up on never comes back later."""
        shard = self.shard_of(bot_id)
        key = keys.inbox_key(self._prefix, shard)
        now = time.time()
        deadline_us = int((now + self.timeout_s - self._margin_s()) * 1_000_000)
        args: list[Any] = [deadline_us, bot_id, f"{now:.6f}"]
        args += [orjson.dumps(u) for u in updates]  # orjson both ways (inbox_reads.decode)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._appends.append((key, args, answer))
        if self._appender is None or self._appender.done():
            self._appender = asyncio.create_task(self._send_appends(), name="inbox:appends")
        try:
            # a caller that gives up cancels `answer`: unsent, it is left out of the pipeline
            async with asyncio.timeout(self.timeout_s):
                appended = await answer
            if not appended:
                raise AppendTooLate(f"shard {shard}: refused past the deadline")
        except REDIS_ERRORS as exc:
            if not self.degraded:
                log.warning("inbox.append_failed", error=type(exc).__name__, fallback="direct")
            self.degraded = True
            self.fallbacks += 1
            return False
        if self.degraded:
            log.info("inbox.append_ok_again")
            self.degraded = False
        self.appended += len(updates)
        self._backlog[shard] = self._backlog.get(shard, 0) + len(updates)
        return True

    async def _send_appends(self) -> None:
        """Every batch queued meanwhile in one pipeline per round trip (up to
        APPEND_CHUNK): thousands of bots whose polls return at once would otherwise each
        wait for a pooled connection, past the timeout (a 10,000-bot burst did). Runs
        while there is something to send, then ends."""
        await asyncio.sleep(0)  # pollers woken in the same loop iteration join the batch
        while self._appends:
            batch = [a for a in self._appends[:APPEND_CHUNK] if not a[2].done()]
            del self._appends[:APPEND_CHUNK]
            if not batch:
                continue
            results: list[Any]
            try:
                async with asyncio.timeout(self.timeout_s):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for key, args, _ in batch:
                            # EVAL, not EVALSHA: no NOSCRIPT after a Redis restart, and
                            # hashing ~400 bytes is nothing next to the XADDs
                            pipe.eval(APPEND, 1, key, *args)
                        results = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # noqa: BLE001 - each caller gets it (Redis: falls back)
                results = [exc] * len(batch)
            finally:
                self.round_trips += 1
            for (_, _, answer), result in zip(batch, results, strict=False):
                if answer.done():
                    continue
                if isinstance(result, BaseException):
                    answer.set_exception(result)
                else:
                    answer.set_result(result)

    def _margin_s(self) -> float:
        # a short Redis timeout keeps most of itself for the append
        return min(APPEND_MARGIN_S, self.timeout_s / 4)

    def full(self, bot_id: int) -> bool:
        return self._backlog.get(self.shard_of(bot_id), 0) >= self.backlog_max

    async def wait_room(self, bot_id: int) -> None:
        """Wait while the bot's shard holds `backlog_max` unhandled entries."""
        while self.full(bot_id):
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()

    # -- acknowledgements -------------------------------------------------------------------

    def ack(self, shard: int, entry_id: bytes) -> None:
        """The entry is handled: XACK + XDEL at the next flush. Never blocks."""
        self._acks.setdefault(shard, []).append(entry_id)
        self.acks_queued += 1
        self._wake.set()
        left = self._backlog.get(shard, 0)
        if left:
            self._backlog[shard] = left - 1
        room = self._room
        if room is not None and left <= self.backlog_max:
            self._room = None
            room.set()

    async def run(self) -> None:
        """The ack flusher: pipelined XACK + XDEL of everything handled meanwhile."""
        failing = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._acks = self._acks, {}
            if not batch:
                continue
            try:
                await self._write_acks(batch)
            except REDIS_ERRORS as exc:
                if failing == 0:
                    log.warning("inbox.ack_failed", error=type(exc).__name__)
                failing += 1
                for shard, ids in batch.items():
                    self._acks.setdefault(shard, []).extend(ids)
                await asyncio.sleep(min(0.5 * 2 ** min(failing, 4), 5.0))
                self._wake.set()
                continue
            if failing:
                log.info("inbox.acked_again", failed_flushes=failing)
                failing = 0

    async def _write_acks(self, batch: dict[int, list[bytes]]) -> None:
        # every shard's XACK + XDEL in one pipeline, up to ACK_CHUNK ids a round trip: a
        # worker owns dozens of shards, and a round trip per shard cost more than its ids
        parts = [
            (shard, ids[start : start + ACK_CHUNK])
            for shard, ids in batch.items()
            for start in range(0, len(ids), ACK_CHUNK)
        ]
        while parts:
            size, take = 0, 0
            while take < len(parts) and (take == 0 or size + len(parts[take][1]) <= ACK_CHUNK):
                size += len(parts[take][1])
                take += 1
            group, parts = parts[:take], parts[take:]
            async with asyncio.timeout(self.timeout_s):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for shard, chunk in group:
                        key = keys.inbox_key(self._prefix, shard)
                        pipe.xack(key, self._group, *chunk)
                        pipe.xdel(key, *chunk)
                    await pipe.execute()
            self.round_trips += 1
            self.acked += size
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    async def flush(self, timeout: float) -> bool:
        """Wait until every acknowledgement queued so far is written (a draining worker:
        otherwise its handled entries wait for a claim pass to be dropped)."""
        try:
            async with asyncio.timeout(timeout):
                await self.wait_acked(self.acks_queued)
        except TimeoutError:
            return False
        return True

    async def wait_acked(self, count: int) -> None:
        """Until `count` acknowledgements in all have reached Redis."""
        while self.acked < count:
            if self._flushed is None:
                self._flushed = asyncio.Event()
            await self._flushed.wait()

    def health(self) -> str:
        return "degraded" if self.degraded or not self.reading else "ok"
