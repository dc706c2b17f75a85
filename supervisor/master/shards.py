"""The shard map: bot -> shard -> worker. Pure functions."""

from __future__ import annotations


def shard_of(bot_id: int, shards: int) -> int:
    return bot_id % shards


def shards_of_worker(worker: int, workers: int, shards: int) -> list[int]:
    """Worker `w` of `W` owns shards `s` with `s % W == w` (DESIGN.md)."""
    if not 0 <= worker < workers <= shards:
        raise ValueError(f"worker {worker} of {workers} with {shards} shards")
    return [s for s in range(shards) if s % workers == worker]
