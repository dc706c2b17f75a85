"""Where a bot's progress — its watermark and the ids answered above it — outlives its
actor: the `ProgressStore` protocol (Redis in a worker: ipc/offsets.py) and
`MemoryProgress`, which keeps it in this process only."""

from __future__ import annotations

from typing import Protocol

from ipc.offsets import BotProgress, Snapshot


class ProgressStore(Protocol):
    """Where a bot's watermark and answered ids survive its actor (Redis in a worker)."""

    async def load(self, bot_id: int) -> BotProgress | None: ...

    async def load_many(self, bot_ids: list[int]) -> dict[int, BotProgress]: ...

    def mark(self, bot_id: int, snapshot: Snapshot) -> None: ...

    async def flush(self, timeout: float, stall_s: float | None = None) -> bool:
        """True once every mark so far is stored; gives up after `timeout`, or after
        `stall_s` without any write landing."""
        ...

    def lease_of(self, bot_id: int) -> int | None:
        """The epoch of this host's lease on the bot's shard (ipc/fencing.py); None: none."""
        ...

    def fenced(self, bot_id: int, lease: int | None = None) -> bool:
        """True while this host may no longer hold the bot's shard under `lease`."""
        ...

    async def wait_renewal(self) -> None: ...


class MemoryProgress:
    """Keeps progress in this process only (tests; an actor without a worker)."""

    def __init__(self) -> None:
        self.saved: dict[int, BotProgress] = {}

    async def load(self, bot_id: int) -> BotProgress | None:
        return self.saved.get(bot_id)

    async def load_many(self, bot_ids: list[int]) -> dict[int, BotProgress]:
        return {b: self.saved[b] for b in bot_ids if b in self.saved}

    def lease_of(self, bot_id: int) -> int | None:
        return None

    def fenced(self, bot_id: int, lease: int | None = None) -> bool:
        return False

    async def wait_renewal(self) -> None:
        return None

    def mark(self, bot_id: int, snapshot: Snapshot) -> None:
        progress = snapshot()
        if progress is not None:
            self.saved[bot_id] = progress

    async def flush(self, timeout: float, stall_s: float | None = None) -> bool:
        return True
