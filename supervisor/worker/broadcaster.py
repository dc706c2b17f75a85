"""The worker's broadcast sender: sends the broadcasts of the bots this worker runs.

Runs in the worker's event loop; `run` is a must-live service. Every
`broadcasts.scan_interval_s` it looks for active broadcasts no live sender holds and
starts one task per broadcast of a bot running here; a task whose bot stopped here (paused,
removed, moved to another worker) is cancelled and gives its broadcast back.

Each task is a `BroadcastRun` (supervisor/worker/broadcast_run.py): claims ahead of the
sends, outcomes written about once a second, sends through the bot's limiter in its
bulk lane. The per-chat at-most-once boundary is in supervisor/registry/broadcasts.py.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import socket
from collections.abc import Callable, Mapping
from typing import Final

import asyncpg
import structlog

from bots.actor.state import ActorState
from bots.actor.supervise import BotHandle
from bots.telegram.api import BotApi
from config import Settings
from supervisor.registry.broadcasts import BroadcastStore
from supervisor.worker.broadcast_run import BroadcastRun
from supervisor.worker.ticker import ticker

log = structlog.get_logger(__name__)

_DB_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class Broadcaster:
    """Runs in the worker's event loop."""

    def __init__(
        self,
        store: BroadcastStore,
        handles: Mapping[int, BotHandle],
        settings: Callable[[], Settings],
    ) -> None:
        self._store = store
        self._handles = handles
        self._settings = settings
        self._prefix = f"{socket.gethostname()}:{os.getpid()}"
        self._seq = itertools.count(1)
        self._scan_failing = False
        self._stopping = False  # draining: start nothing new
        #: broadcast id -> (bot id, its sending task)
        self._tasks: dict[int, tuple[int, asyncio.Task[None]]] = {}

    def _running(self, bot_id: int) -> BotHandle | None:
        handle = self._handles.get(bot_id)
        if handle is None or handle.actor.state is not ActorState.RUNNING:
            return None
        return handle

    async def run(self) -> None:
        try:
            async for _ in ticker(self._settings().broadcasts.scan_interval_s):
                await self.scan()
        finally:
            await self.stop()

    async def scan(self) -> None:
        """Stop senders whose bot left, start senders for broadcasts of bots here."""
        if self._stopping:
            return
        for bot_id, task in list(self._tasks.values()):
            if self._running(bot_id) is None:
                task.cancel(msg="bot stopped here")
        try:
            found = await self._store.runnable()
        except _DB_ERRORS as exc:
            if not self._scan_failing:  # once per outage: reconcile warns of it already
                log.info("broadcast.scan_failed", error=type(exc).__name__)
            self._scan_failing = True
            return
        self._scan_failing = False
        for broadcast_id, bot_id in found:
            if broadcast_id in self._tasks or self._running(bot_id) is None:
                continue
            # a fresh runner id per run: a crashed run's lease is never mistaken for ours
            runner = f"{self._prefix}:{next(self._seq)}"
            task = asyncio.create_task(
                self._send(broadcast_id, bot_id, runner), name=f"bot:{bot_id}:broadcast"
            )
            self._tasks[broadcast_id] = (bot_id, task)
            task.add_done_callback(functools.partial(self._done, broadcast_id))

    def _done(self, broadcast_id: int, task: asyncio.Task[None]) -> None:
        entry = self._tasks.get(broadcast_id)
        if entry is not None and entry[1] is task:
            del self._tasks[broadcast_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("broadcast.crashed", broadcast_id=broadcast_id, error=repr(task.exception()))

    async def stop(self) -> None:
        """Cancel every sender; each gives its broadcast back (bounded) before it ends."""
        self._stopping = True
        tasks = [task for _, task in self._tasks.values()]
        for task in tasks:
            task.cancel(msg="worker draining")
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_stopped(self, broadcast_id: int) -> None:
        """Until this worker's sender of the broadcast (if any) has ended (tests, drain)."""
        entry = self._tasks.get(broadcast_id)
        if entry is not None:
            await asyncio.gather(entry[1], return_exceptions=True)

    def statistics(self) -> dict[str, int]:
        return {"broadcasts_sending": len(self._tasks)}

    # -- one broadcast --------------------------------------------------------------------

    async def _send(self, broadcast_id: int, bot_id: int, runner: str) -> None:
        """Runs in the broadcast's own task until it is done, cancelled or its bot leaves."""
        blog = log.bind(bot_id=bot_id, broadcast_id=broadcast_id)
        try:
            record = await self._store.get(bot_id, broadcast_id)
        except _DB_ERRORS as exc:
            blog.info("broadcast.not_loaded", error=type(exc).__name__)  # the next scan retries
            return
        if record is None:
            return

        def api() -> BotApi | None:
            handle = self._running(bot_id)
            return None if handle is None else handle.actor.api

        blog.info("broadcast.sending", total=record.total, resumed=record.started_at is not None)
        run = BroadcastRun(
            self._store,
            broadcast_id,
            runner,
            api,
            self._settings().broadcasts,
            record.message(),
        )
        reason = await run.run()
        blog.info("broadcast.stopped", reason=reason)
