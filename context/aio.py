"""Small asyncio helpers of the context store: per-key locks, waiting for one of events."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from types import TracebackType
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    """One asyncio.Lock per key, created on demand and dropped when nobody holds or waits."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[K, _Entry] = {}

    def hold(self, key: K) -> _Held[K]:
        """`async with locks.hold(key):` runs the block alone for that key."""
        return _Held(self._locks, key)

    def __len__(self) -> int:
        return len(self._locks)


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Held(Generic[K]):
    __slots__ = ("_entry", "_key", "_locks")

    def __init__(self, locks: dict[K, _Entry], key: K) -> None:
        self._locks = locks
        self._key = key
        self._entry: _Entry | None = None

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = _Entry()
        self._entry = entry
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._entry is not None
        self._entry.lock.release()
        self._release_user()

    def _release_user(self) -> None:
        entry = self._entry
        assert entry is not None
        entry.users -= 1
        if entry.users == 0 and self._locks.get(self._key) is entry:
            del self._locks[self._key]


async def wait_first(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Return when one of `events` is set, or after `timeout` seconds."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
