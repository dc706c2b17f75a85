"""The heartbeat record: a worker sends it to its master on a pipe of its own (liveness)
and also stores it in Redis (for `botvisor status` and other hosts)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Versioned by tolerance: unknown fields are ignored and every field has a default,
    so a master reads the heartbeats of a newer or older worker (rolling upgrades)."""

    index: int = -1
    pid: int = 0
    #: booting | ready | draining
    state: str = "booting"
    shards: list[int] = field(default_factory=list)
    desired: int = 0
    bots: dict[str, int] = field(default_factory=dict)
    loop_lag_s: float = 0.0
    at: float = 0.0  # wall clock (time.time()) of writing
    epoch: int = -1  # the shard assignment this worker has applied
    totals: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    #: the context store's layers: redis / postgres "ok" | "recovering" | "degraded"
    health: dict[str, str | int] = field(default_factory=dict)
    #: per-bot figures for the dashboard, only on the pipe to the master and only with
    #: `dashboard.enabled`: bot id -> [actor state, updates received, messages sent,
    #: 429s, errors (since the previous beat), wall time of its newest update (0: none)]
    #: for bots with news or not running; an older master ignores these fields.
    per_bot: dict[str, list[Any]] = field(default_factory=dict)
    #: ids of the other bots: running, nothing new since the previous beat
    per_bot_idle: list[int] = field(default_factory=list)
    #: bots left out by the cap (PER_BOT_MAX in `per_bot` and `per_bot_idle` together,
    #: those with news first)
    per_bot_omitted: int = 0
    #: False: this beat carries no per-bot figures and the previous ones stand. A worker
    #: sends them only every `dashboard.poll_interval_s` to a master that reads such beats
    #: (pipe `Configure.sparse_figures`); a beat without the field (an older worker)
    #: carries them.
    per_bot_included: bool = True

    def dumps(self) -> bytes:
        # orjson encodes the dataclass itself: asdict() would deep-copy 10,000 per-bot lists
        return orjson.dumps(self)

    def summary(self) -> dict[str, Any]:
        """The record without per-bot figures: what Redis and status replies carry."""
        return {name: getattr(self, name) for name in _SUMMARY_FIELDS}

    @classmethod
    def loads(cls, raw: bytes | str) -> Heartbeat | None:
        try:
            data: Any = orjson.loads(raw)
            if not isinstance(data, dict):
                return None
            return cls(**{k: v for k, v in data.items() if k in _FIELDS})
        except (orjson.JSONDecodeError, TypeError):
            return None

    @property
    def running(self) -> int:
        return self.bots.get("running", 0)


_FIELDS = frozenset(f.name for f in fields(Heartbeat))
_SUMMARY_FIELDS = tuple(
    f.name
    for f in fields(Heartbeat)
    if f.name not in ("per_bot", "per_bot_idle", "per_bot_omitted", "per_bot_included")
)
#: per-bot figures in one heartbeat at most (~40 bytes each on the pipe)
PER_BOT_MAX: Final = 10_000


async def reply_status(redis: aioredis.Redis, reply_to: str, status: dict[str, Any]) -> None:
    """Answer a `StatusRequest`: push our figures to the asker's list (which expires)."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.rpush(reply_to, orjson.dumps(status))
            pipe.expire(reply_to, 30)
            await pipe.execute()
    except (aioredis.RedisError, OSError) as exc:
        log.warning("status.reply_failed", error=type(exc).__name__)


#: A master that stopped reading: drop heartbeats rather than grow the buffer.
_SEND_BUFFER_MAX = 256 * 1024


class HeartbeatSender:
    """Worker side of the heartbeat pipe: one JSON line per beat on an inherited fd.

    Heartbeats travel on their own pipe, not through Redis, so only a stuck event loop
    can make a worker look hung: Redis pool pressure or an outage cannot. Writes go
    through an asyncio write transport and never block the loop.
    """

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport

    @classmethod
    async def open(cls, fd: int) -> HeartbeatSender:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(fd, "wb", buffering=0)
        transport, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, pipe)
        return cls(transport)  # type: ignore[arg-type]

    def send(self, heartbeat: Heartbeat) -> bool:
        """False when the master is gone or not reading (the beat is dropped)."""
        t = self._transport
        if t.is_closing() or t.get_write_buffer_size() > _SEND_BUFFER_MAX:
            return False
        t.write(heartbeat.dumps() + b"\n")
        return True

    def close(self) -> None:
        self._transport.close()


async def read_heartbeats(fd: int, on_beat: Callable[[Heartbeat], None]) -> None:
    """Master side: hand every heartbeat line of one worker to `on_beat` until EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024 * 1024)
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while line := await reader.readline():
            hb = Heartbeat.loads(line)
            if hb is not None:
                on_beat(hb)
    finally:
        transport.close()
