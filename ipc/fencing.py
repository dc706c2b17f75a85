"""Fencing tokens in Redis: a shard's lease epoch guards every progress write of its bots.

The master that takes a shard's lease raises `{prefix}fence:{shard}` to the new epoch
(never lowers it: a stale master cannot undo it) before its workers start the bots.
A worker writes its bots' watermarks and answered ids through `FENCED_MSET`, one call
per shard, which refuses the writes unless the fence still holds the worker's epoch — so
a host that wakes from a long pause cannot move a watermark or record an answer for a
shard it no longer holds.

Locally, a worker also knows until when (by this machine's clock, minus a margin) its
master's leases are surely valid: past it, actors handle nothing and poll nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping

import redis.asyncio as aioredis

from ipc import keys

#: KEYS[1] a shard's fence, KEYS[2..] progress keys of its bots; ARGV[1] the epoch,
#: ARGV[2] the TTL, ARGV[3..] the values. All written (their count returned) or none (0).
#: One call per shard, not per bot: a flush of 5,000 bots is a few dozen script calls.
#: An absent fence (Redis lost its data) lets the writes through: the next renewal puts it back.
FENCED_MSET = """
local fence = redis.call('GET', KEYS[1])
if fence and fence ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[2])
end
return #KEYS - 1
"""

#: KEYS fence keys, ARGV their epochs: each raised to its epoch, never lowered.
RAISE_FENCES = """
for i, key in ipairs(KEYS) do
  local cur = tonumber(redis.call('GET', key))
  if not cur or cur < tonumber(ARGV[i]) then redis.call('SET', key, ARGV[i]) end
end
return #KEYS
"""


#: the epoch a write carries for a shard this host does not hold: no fence ever equals it
NOT_HELD = -1


def lease_clock() -> float:
    """Seconds on a clock every process of this machine shares and that keeps running
    through a suspend (CLOCK_BOOTTIME where there is one): lease deadlines use it."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


async def raise_fences(
    redis: aioredis.Redis, prefix: str, epochs: Mapping[int, int], timeout: float
) -> None:
    """Runs in the master after taking (or renewing) leases; raises Redis errors."""
    if not epochs:
        return
    shards = sorted(epochs)
    async with asyncio.timeout(timeout):
        await redis.eval(
            RAISE_FENCES,
            len(shards),
            *(keys.fence_key(prefix, s) for s in shards),
            *(epochs[s] for s in shards),
        )


class Fencing:
    """A worker's view of its host's leases: the epoch of each shard and the deadline
    (lease clock) until which they are surely ours. Without leases (a worker run on its
    own, tests) nothing is fenced and writes are plain SETs."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        #: None until the first renewal arrives; then the shards this host holds (maybe none)
        self.epochs: dict[int, int] | None = None
        self.valid_until = math.inf
        self._renewed = asyncio.Event()
        self.refused = 0

    def update(self, epochs: Mapping[int, int], valid_until: float) -> None:
        """A renewal from the master (pipe `Leases`)."""
        self.epochs = dict(epochs)
        self.valid_until = valid_until
        self._renewed.set()
        self._renewed = asyncio.Event()

    def epoch_of(self, bot_id: int) -> int | None:
        """The epoch a write of this bot carries; NOT_HELD (refused by any fence) for a
        shard this host no longer holds; None without leases (an unfenced write)."""
        if self.epochs is None:
            return None
        return self.epochs.get(bot_id % self.shards, NOT_HELD)

    def fenced(self, bot_id: int, epoch: int | None = None) -> bool:
        """True while this bot's shard lease may have lapsed — or, given the `epoch` an
        actor started under, while the shard is held under another: act on nothing."""
        if self.epochs is None:
            return False
        held = self.epochs.get(bot_id % self.shards)
        if held is None or (epoch is not None and held != epoch):
            return True
        # a lone host's leases never lapse: no clock read (this runs several times an update)
        until = self.valid_until
        return until != math.inf and lease_clock() >= until

    async def wait_renewal(self) -> None:
        """Until the next renewal from the master."""
        await self._renewed.wait()

    async def wait_unfenced(self, bot_id: int, epoch: int | None = None) -> None:
        """Until a renewal makes this bot's lease valid again (or the caller is cancelled)."""
        while self.fenced(bot_id, epoch):
            await self._renewed.wait()


class LeaseChanged(Exception):  # noqa: N818 - an event, not an error
    """An actor's shard is held under a newer epoch than the one it started with: its
    in-memory state predates another holder's; a new run starts from the stored record."""
