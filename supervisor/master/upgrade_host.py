"""What a rolling upgrade (supervisor/master/upgrade.py) needs of the master and of its
worker slots: the master (supervisor/master/arbiter.py's `Master`) and its
`supervisor/master/slots.py` `WorkerSlot` fit these protocols; tests stand in for both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import asyncio

    from config import Settings
    from ipc.heartbeat import Heartbeat


class Slot(Protocol):
    """What the upgrade reads and sets on a worker slot (slots.py's `WorkerSlot`)."""

    index: int
    proc: asyncio.subprocess.Process | None
    shards: list[int]
    epoch: int
    heartbeat: Heartbeat | None

    @property
    def pid(self) -> int | None: ...


S = TypeVar("S", bound=Slot)


class UpgradeHost(Protocol[S]):
    """What the upgrade needs of the master (supervisor/master/arbiter.py's Master)."""

    slots: list[S]
    retiring: list[S]

    @property
    def settings(self) -> Settings: ...

    @property
    def rebalance(self) -> object | None: ...

    @property
    def draining(self) -> bool: ...

    async def spawn_worker(self, slot: S) -> None: ...

    def assign_nowait(self, slot: S, shards: list[int]) -> None: ...


#: a new slot for worker `index` at `epoch` owning nothing, to take over shards `warm`
SlotFactory = Callable[[int, int, list[int]], S]
