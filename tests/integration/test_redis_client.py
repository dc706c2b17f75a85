"""Our Redis clients against real Redis: a cancel is never lost in a command's write."""

from __future__ import annotations

import asyncio

from ipc.redis_client import redis_client


async def test_a_cancelled_command_always_raises_cancelled(redis_url: str) -> None:
    """redis-py writes under asyncio.wait_for, which on Python 3.11 drops a cancel landing
    as the write completes: the task went on as if never cancelled, and loops over Redis
    (the inbox reader) never ended. Cancels at every point of a PING's first loop turns."""
    client = redis_client(redis_url, 2.0)
    outcomes: list[str] = []
    try:
        for turns in range(12):
            for _ in range(10):

                async def ping() -> str:
                    await client.ping()
                    return "returned"

                task = asyncio.create_task(ping())
                for _ in range(turns):
                    await asyncio.sleep(0)  # lets the command get that far: the point of it
                task.cancel()
                (result,) = await asyncio.gather(task, return_exceptions=True)
                outcomes.append(
                    type(result).__name__ if isinstance(result, BaseException) else result
                )
        assert await client.ping()  # the pool is still usable afterwards
    finally:
        await client.aclose()
    assert set(outcomes) == {"CancelledError"}


async def test_replies_are_parsed_by_hiredis(redis_url: str) -> None:
    """hiredis is a dependency: redis-py's pure-Python parser cost ~23 µs of CPU per
    stream entry read (XREADGROUP), hiredis ~1.3 µs, on every update in both modes."""
    client = redis_client(redis_url, 2.0)
    conn = client.connection_pool.make_connection()  # type: ignore[attr-defined]
    try:
        assert type(conn._parser).__name__ == "_AsyncHiredisParser"  # noqa: SLF001
        assert await client.ping()
    finally:
        await client.aclose()
