"""Each bot's progress in Redis: its confirm watermark and the updates it answered above it.

One key per bot, `{prefix}offset:{bot_id}` = `W` or `W:id,id,…` (TTL 24 h, Telegram's
own retention): W is the oldest unhandled update id, the ids after the colon were
answered but lie above W (a slower chat still holds W back). A new poller of the bot —
after a stop, a shard move, a restart or a SIGKILL — starts at W and skips those ids, so
an update Telegram hands out again is not answered twice.

Writes are coalesced per worker (group commit): an actor only marks itself dirty; one
flusher task writes every dirty bot in pipelines of at most `CHUNK` keys (with leases,
one fenced script call per shard), and while a flush runs the next batch gathers. A Redis fault keeps the marks for the next
flush: it costs duplicates after a crash, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import redis.asyncio as aioredis
import structlog

from ipc import keys
from ipc.fencing import FENCED_MSET, Fencing

log = structlog.get_logger(__name__)

#: Telegram keeps an update at most 24 h; an older record means nothing.
TTL_S = 86_400
#: Keys per pipelined command batch (bounded: one flush never monopolises Redis).
CHUNK = 1000
#: Answered ids kept per bot above its watermark (a bot's in-flight window is smaller).
DONE_MAX = 10_000


class BotProgress(NamedTuple):
    watermark: int
    done: frozenset[int] = frozenset()

    def encode(self) -> bytes:
        if not self.done:
            return b"%d" % self.watermark
        ids = sorted(i for i in self.done if i >= self.watermark)[:DONE_MAX]
        return b"%d:%s" % (self.watermark, b",".join(b"%d" % i for i in ids))

    @classmethod
    def decode(cls, raw: bytes | str | None) -> BotProgress | None:
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        head, _, tail = text.partition(":")
        try:
            done = frozenset(int(i) for i in tail.split(",")) if tail else frozenset()
            return cls(int(head), done)
        except ValueError:
            return None


Snapshot = Callable[[], BotProgress | None]


class RedisProgress:
    """Runs in the worker's loop; `run()` is the flusher (one of the worker's services)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        timeout_s: float,
        fencing: Fencing | None = None,
    ) -> None:
        self._redis = redis
        #: with leases (several hosts), every write carries its shard's epoch
        self.fencing = fencing
        self._fenced_mset = redis.register_script(FENCED_MSET)
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._dirty: dict[int, Snapshot] = {}
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # a flush is awaited: cut a failure backoff short
        self._started = self._finished = 0  # flush generations
        self._waiters: dict[int, asyncio.Future[bool]] = {}
        self._failing = 0
        self.flushes = 0
        self.keys_written = 0

    async def load(self, bot_id: int) -> BotProgress | None:
        return (await self.load_many([bot_id])).get(bot_id)

    async def load_many(self, bot_ids: Iterable[int]) -> dict[int, BotProgress]:
        """One MGET per `CHUNK` bots: a worker starting thousands of bots at once."""
        ids = list(bot_ids)
        out: dict[int, BotProgress] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            try:
                async with asyncio.timeout(self._timeout_s):
                    raw = await self._redis.mget([keys.offset_key(self._prefix, b) for b in chunk])
            except (aioredis.RedisError, OSError, TimeoutError) as exc:
                log.warning("progress.load_failed", bots=len(chunk), error=type(exc).__name__)
                continue
            for bot_id, value in zip(chunk, raw, strict=True):
                progress = BotProgress.decode(value)
                if progress is not None:
                    out[bot_id] = progress
        return out

    def lease_of(self, bot_id: int) -> int | None:
        """The epoch this host holds the bot's shard under (None: no leases)."""
        return self.fencing.epoch_of(bot_id) if self.fencing is not None else None

    def fenced(self, bot_id: int, lease: int | None = None) -> bool:
        """The bot's shard lease may have lapsed by this host's clock, or is held under
        another epoch than `lease`: act on nothing."""
        return self.fencing is not None and self.fencing.fenced(bot_id, lease)

    async def wait_renewal(self) -> None:
        if self.fencing is not None:
            await self.fencing.wait_renewal()

    def mark(self, bot_id: int, snapshot: Snapshot) -> None:
        """The bot's progress changed; `snapshot` is read at flush time. Never blocks."""
        self._dirty[bot_id] = snapshot
        self._wake.set()

    async def flush(self, timeout: float, stall_s: float | None = None) -> bool:
        """Wait until every mark made so far is written; False if that flush failed or
        did not finish within `timeout` — or, given `stall_s`, once no write at all has
        landed for that long: a hung Redis gives up early, while a busy loop whose writes
        still land (a whole fleet stopping at once) is waited for."""
        if self._dirty:
            target = self._started + 1  # the next batch taken includes our marks
        elif self._started > self._finished:
            target = self._started  # our marks are in the batch being written
        else:
            return True
        self._wake.set()
        self._urgent.set()
        waiter = self._waiters.get(target)
        loop = asyncio.get_running_loop()
        if waiter is None:
            waiter = self._waiters[target] = loop.create_future()
        deadline = loop.time() + timeout
        step = timeout if stall_s is None else min(stall_s, timeout)
        landed = self.flushes
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(step, left)):
                    return await asyncio.shield(waiter)
            except TimeoutError:
                if self.flushes == landed:
                    return False  # nothing written meanwhile: Redis is not answering
                landed = self.flushes
        return False

    async def run(self) -> None:
        """The flusher: forever, one pipelined write per batch of dirty bots."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._dirty:
                continue
            batch, self._dirty = self._dirty, {}
            self._started += 1
            ok = await self._write(batch)
            if not ok:
                for bot_id, snap in batch.items():
                    self._dirty.setdefault(bot_id, snap)  # newer marks win
            self._finished = self._started
            waiter = self._waiters.pop(self._finished, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(ok)
            if not ok:
                # back off, but a flush someone waits for (a stopping actor) goes at once
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(0.5 * 2 ** min(self._failing, 4), 5.0)):
                        await self._urgent.wait()
                self._urgent.clear()
                self._wake.set()

    async def _write(self, batch: dict[int, Snapshot]) -> bool:
        items = [(b, p) for b, snap in batch.items() if (p := snap()) is not None]
        refused = 0
        try:
            for chunk in _pipelines(self._groups(items)):
                async with asyncio.timeout(self._timeout_s):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for group in chunk:
                            await self._queue_write(pipe, group)
                        results = await pipe.execute()
                # a fenced group answers 0 when its shard's fence refused all of it
                refused += sum(len(g.items) for g, r in zip(chunk, results, strict=True) if r == 0)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            if self._failing == 0:
                log.warning("progress.save_failed", bots=len(items), error=type(exc).__name__)
            self._failing += 1
            return False
        if self._failing:
            log.info("progress.saved_again", failed_flushes=self._failing)
            self._failing = 0
        if refused and self.fencing is not None:
            # a lease lost while we paused: the new holder's record stands
            self.fencing.refused += refused
            log.info("progress.fenced", refused=refused)
        self.flushes += 1
        self.keys_written += len(items) - refused
        return True

    def _groups(self, items: list[tuple[int, BotProgress]]) -> list[_Group]:
        """One group per fenced shard (split at CHUNK); unfenced bots one SET each."""
        fencing = self.fencing
        plain: list[_Group] = []
        fenced: dict[tuple[int, int], list[tuple[int, BotProgress]]] = {}
        for bot_id, progress in items:
            epoch = fencing.epoch_of(bot_id) if fencing is not None else None
            if fencing is None or epoch is None:
                plain.append(_Group(None, 0, [(bot_id, progress)]))
            else:
                fenced.setdefault((bot_id % fencing.shards, epoch), []).append((bot_id, progress))
        for (shard, epoch), group in fenced.items():
            for start in range(0, len(group), CHUNK):
                plain.append(_Group(shard, epoch, group[start : start + CHUNK]))
        return plain

    async def _queue_write(self, pipe: aioredis.client.Pipeline, group: _Group) -> None:
        prefix = self._prefix
        if group.shard is None:
            ((bot_id, progress),) = group.items
            pipe.set(keys.offset_key(prefix, bot_id), progress.encode(), ex=TTL_S)
            return
        await self._fenced_mset(
            keys=[
                keys.fence_key(prefix, group.shard),
                *(keys.offset_key(prefix, b) for b, _ in group.items),
            ],
            args=[group.epoch, TTL_S, *(p.encode() for _, p in group.items)],
            client=pipe,
        )


class _Group(NamedTuple):
    """Progress records written by one command: a fenced shard's (`shard` set), or one
    bot's plain SET (no leases)."""

    shard: int | None
    epoch: int
    items: list[tuple[int, BotProgress]]


def _pipelines(groups: list[_Group]) -> Iterator[list[_Group]]:
    """Groups packed into pipelines of at most CHUNK keys (one flush never monopolises
    Redis)."""
    chunk: list[_Group] = []
    size = 0
    for group in groups:
        if chunk and size + len(group.items) > CHUNK:
            yield chunk
            chunk, size = [], 0
        chunk.append(group)
        size += len(group.items)
    if chunk:
        yield chunk
