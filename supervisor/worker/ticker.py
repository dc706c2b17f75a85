"""One drift-free periodic ticker for every loop (arq's poll())."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator


async def ticker(interval: float, wake: asyncio.Event | None = None) -> AsyncIterator[float]:
    """Yield monotonic times every `interval`, without drift; `wake` fires one early."""
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        yield now
        next_at += interval
        if next_at < now:  # fell behind (loop was blocked): skip missed ticks
            next_at = now + interval
        delay = next_at - time.monotonic()
        if wake is None:
            await asyncio.sleep(max(delay, 0))
            continue
        try:
            async with asyncio.timeout(max(delay, 0)):
                await wake.wait()
        except TimeoutError:
            pass
        wake.clear()
