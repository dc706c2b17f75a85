"""The shard owner's side of the durable inbox (ipc/inbox.py): its consumer group read
with XREADGROUP, what this consumer was handed and never acknowledged read again, entries
idle past `claim_idle_s` taken over with XAUTOCLAIM, and consumers left behind by earlier
workers removed. A part of `Inbox`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import orjson
import redis.asyncio as aioredis
import structlog

from ipc import keys

log = structlog.get_logger(__name__)

#: Entries per XREADGROUP / XAUTOCLAIM call.
READ_COUNT = 500


class Entry(NamedTuple):
    shard: int
    entry_id: bytes
    bot_id: int
    polled_at: float  # time.time() when polled
    update: dict[str, Any]


def decode(shard: int, entry_id: bytes, fields: dict[bytes, bytes]) -> Entry | None:
    try:
        update = orjson.loads(fields[b"u"])
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return None
        return Entry(shard, entry_id, int(fields[b"b"]), float(fields[b"t"]), update)
    except (KeyError, ValueError, TypeError):
        return None


class InboxReads:
    """`Inbox` sets these in its constructor and acknowledges (`ack`)."""

    _redis: aioredis.Redis
    _prefix: str
    _group: str
    _groups: set[int]
    consumer: str
    timeout_s: float
    claim_idle_s: float
    round_trips: int
    ack: Callable[[int, bytes], None]

    async def _ensure_groups(self, shards: Iterable[int]) -> None:
        for shard in shards:
            if shard in self._groups:
                continue
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._redis.xgroup_create(
                        keys.inbox_key(self._prefix, shard), self._group, id="0", mkstream=True
                    )
            except aioredis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(shard)

    async def read(self, shards: list[int], block_ms: int) -> list[Entry]:
        """New entries of `shards` for this consumer (XREADGROUP, blocking up to
        `block_ms`). Raises the Redis error: the reader backs off."""
        await self._ensure_groups(shards)
        # a blocked read must end before the client's socket timeout (redis.timeout_s)
        block_ms = max(10, min(block_ms, int(self.timeout_s * 500)))
        streams: dict[Any, Any] = {keys.inbox_key(self._prefix, s): ">" for s in shards}
        by_key = {keys.inbox_key(self._prefix, s): s for s in shards}
        try:
            async with asyncio.timeout(self.timeout_s + block_ms / 1000):
                reply = await self._redis.xreadgroup(
                    self._group, self.consumer, streams, count=READ_COUNT, block=block_ms
                )
        except aioredis.ResponseError as exc:
            self.round_trips += 1
            if "NOGROUP" in str(exc):  # the stream was deleted (FLUSHALL): create again
                self._groups.clear()
                return []
            raise
        self.round_trips += 1
        out: list[Entry] = []
        for key, entries in _streams_of(reply):
            shard = by_key[key.decode() if isinstance(key, bytes) else key]
            out.extend(self._decoded(shard, entries))
        return out

    async def read_own_pending(self, shards: list[int]) -> list[Entry]:
        """Every entry of `shards` delivered to this consumer and not acknowledged, oldest
        first (XREADGROUP from id 0). After a failed read or claim: Redis may have handed
        us entries whose reply never arrived (a cut connection, a client-side timeout);
        they would otherwise wait `claim_idle_s` and then be answered after newer updates
        of their chat. What we already hold comes back too: the dispatcher dedupes it."""
        await self._ensure_groups(shards)
        by_key = {keys.inbox_key(self._prefix, s): s for s in shards}
        after: dict[Any, Any] = dict.fromkeys(by_key, "0")
        out: list[Entry] = []
        regrouped = False
        while after:
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await self._redis.xreadgroup(
                        self._group, self.consumer, after, count=READ_COUNT
                    )
            except aioredis.ResponseError as exc:
                self.round_trips += 1
                if "NOGROUP" not in str(exc) or regrouped:
                    raise
                # a stream was lost (FLUSHALL, a restart without persistence): nothing of
                # it is pending; the others still may be, so create it again and go on
                regrouped = True
                self._groups.clear()
                await self._ensure_groups(shards)
                continue
            self.round_trips += 1
            more: dict[Any, Any] = {}
            for key, entries in _streams_of(reply):
                name = key.decode() if isinstance(key, bytes) else key
                shard = by_key[name]
                for entry_id, fields in entries:
                    if fields is None:  # deleted, never acknowledged: only the ack is left
                        self.ack(shard, entry_id)
                out.extend(self._decoded(shard, entries))
                if len(entries) >= READ_COUNT:
                    more[name] = entries[-1][0]
            after = more
        return out

    async def claim(self, shards: list[int]) -> list[Entry]:
        """Every entry of `shards` pending longer than `claim_idle_s` (XAUTOCLAIM), now
        this consumer's: a dead reader's, or one whose bot was not running here."""
        await self._ensure_groups(shards)
        out: list[Entry] = []
        idle_ms = int(self.claim_idle_s * 1000)
        for shard in shards:
            key = keys.inbox_key(self._prefix, shard)
            cursor: bytes | str = "0-0"
            while True:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        reply = await self._redis.xautoclaim(
                            key, self._group, self.consumer, idle_ms, cursor, count=READ_COUNT
                        )
                except aioredis.ResponseError as exc:
                    if "NOGROUP" in str(exc):  # Redis lost the stream: nothing to claim
                        self._groups.clear()
                        break
                    raise
                self.round_trips += 1
                cursor, entries = reply[0], reply[1]
                out.extend(self._decoded(shard, entries))
                if cursor in (b"0-0", "0-0"):
                    break
        return out

    async def forget_idle_consumers(self, shards: list[int]) -> int:
        """Remove consumers with nothing pending, idle past `claim_idle_s` (every worker
        start leaves one behind in each group it read). Returns how many went."""
        gone = 0
        idle_ms = self.claim_idle_s * 1000
        for shard in shards:
            key = keys.inbox_key(self._prefix, shard)
            async with asyncio.timeout(self.timeout_s):
                consumers = await self._redis.xinfo_consumers(key, self._group)
            self.round_trips += 1
            for c in consumers:
                name = c.get("name")
                name = name.decode() if isinstance(name, bytes) else str(name)
                if name != self.consumer and not c.get("pending") and c.get("idle", 0) > idle_ms:
                    async with asyncio.timeout(self.timeout_s):
                        await self._redis.xgroup_delconsumer(key, self._group, name)
                    self.round_trips += 1
                    gone += 1
        return gone

    def _decoded(self, shard: int, entries: list[Any]) -> list[Entry]:
        out: list[Entry] = []
        for entry_id, fields in entries:
            if fields is None:
                continue  # deleted meanwhile
            entry = decode(shard, entry_id, fields)
            if entry is None:
                log.warning("inbox.bad_entry", shard=shard, entry=entry_id)
                self.ack(shard, entry_id)
            else:
                out.append(entry)
        return out


def _streams_of(reply: Any) -> list[tuple[Any, list[Any]]]:
    """XREADGROUP's reply as (key, entries) pairs, whatever the protocol version."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(k, v) for k, v in reply]
