"""A draining worker's tasks that do not stop when told: cancel them again, and name the
coroutine each one waits in, so an overrun says what it was waiting for instead of being
SIGKILLed in silence."""

from __future__ import annotations

import asyncio
from typing import Any

#: how long a drained worker keeps cancelling services that do not stop
STOP_SERVICES_S = 3.0


def innermost(task: asyncio.Task[Any]) -> str:
    """Where a task waits: the innermost coroutine of its await chain, as name:line."""
    coro: Any = task.get_coro()
    where = "?"
    for _ in range(50):
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            where = f"{frame.f_code.co_qualname}:{frame.f_lineno}"
        nxt = getattr(coro, "cr_await", None)
        if nxt is None:
            break
        coro = nxt
    return where


def where_tasks_wait(tasks: set[asyncio.Task[Any]]) -> list[str]:
    """`name @ coroutine:line` of each task not done."""
    return [f"{t.get_name()} @ {innermost(t)}" for t in tasks if not t.done()]


async def stop_services(services: list[asyncio.Task[Any]], log: Any) -> None:
    """Cancel the services and wait for them, cancelling again any that carried on: a
    library may turn the CancelledError into its own error inside our retry loop (seen:
    the inbox reader's XREADGROUP), which would hold the TaskGroup, and so the exit,
    until the master's SIGKILL."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + STOP_SERVICES_S
    pending = {t for t in services if not t.done()}
    while pending:
        for task in pending:
            task.cancel(msg="drain complete")
        _, pending = await asyncio.wait(pending, timeout=0.5)
        if pending and loop.time() >= give_up:
            log.error("worker.services_stuck", tasks=where_tasks_wait(pending))
            return
