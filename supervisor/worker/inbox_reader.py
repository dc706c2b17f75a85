"""The worker's inbox reader: one task over the streams of every shard it owns.

Reads new entries (XREADGROUP; after a failed read, first this consumer's own pending
entries, whose reply may have been lost) and, every half `bots.inbox_claim_idle_s`, takes over
entries pending that long (XAUTOCLAIM: a SIGKILLed predecessor's, or ones whose bot was
not running here yet). Each entry goes to its bot's dispatcher (`ChatDispatcher.offer`):
per-chat order is kept, the progress record skips what was answered already, and the
entry is acknowledged and deleted once its handler finished. An entry whose bot is not
running here stays pending and is offered again by a later claim pass.

A claim pass that started at least `claim_idle_s` after a bot's run began has offered
every entry older than that run: the run's dispatcher then stops keeping every answered
id (`lift_floor`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

import structlog

from ipc.inbox import REDIS_ERRORS, Inbox
from ipc.inbox_reads import Entry

if TYPE_CHECKING:
    from bots.actor.queue_budget import QueueBudget
    from bots.actor.supervise import BotHandle

log = structlog.get_logger(__name__)

#: How long one XREADGROUP blocks: the reader notices new shards and claims this often.
BLOCK_MS = 1000
#: Entries kept in memory for bots still starting here (the rest wait for a claim pass).
PARKED_MAX = 10_000
#: How often idle consumers without pending entries are removed from the groups.
CLEANUP_EVERY_S = 300.0
#: An entry whose bot has not run here for this long is dropped (Telegram's retention).
STALE_S = 86_400.0
#: Webhook mode: how long a bot's answered update ids are kept for dedupe. Telegram
#: re-sends an update whose 200 it did not get within its backoff (doubling, capped at
#: 60-120 s), so ten minutes covers several resends while memory stays bounded.
WEBHOOK_ANSWERED_S = 600.0


class InboxReader:
    def __init__(
        self,
        inbox: Inbox,
        handles: Mapping[int, BotHandle],
        shards: Callable[[], list[int]],
        budget: QueueBudget | None = None,
    ) -> None:
        self.inbox = inbox
        self._handles = handles
        self._shards = shards
        self._budget = budget
        self._next_claim = 0.0
        self._next_cleanup = 0.0
        self._parked: list[Entry] = []  # read while their bot was starting here
        #: a read or claim failed: entries Redis handed us may never have arrived
        self._reread_own = False
        self.failing = 0
        self.offered = self.skipped = self.absent = 0

    async def run(self) -> None:
        while True:
            shards = sorted(self._shards())
            try:
                if time.monotonic() >= self._next_claim:
                    await self._claim_pass(shards)
                if self._budget is not None and self._budget.full():
                    await self._budget.wait_room()
                if self._reread_own and shards:
                    # our whole pending list, in stream order, before anything newer: it
                    # holds the parked entries too, so they are not offered twice
                    self._parked = []
                    self._deliver(await self.inbox.read_own_pending(shards))
                    self._reread_own = False
                if self._parked:
                    parked, self._parked = self._parked, []
                    self._deliver(parked)
                if shards:
                    entries = await self.inbox.read(shards, BLOCK_MS)
                    # parked entries are older than anything just read: a bot that began to
                    # run during the read must get them first, or a chat's newer update
                    # overtakes its parked one (a webhook -> polling restart did that)
                    parked, self._parked = self._parked, []
                    self._deliver(parked + entries if parked else entries)
                else:
                    await asyncio.sleep(BLOCK_MS / 1000)
            except REDIS_ERRORS as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # redis-py may raise its own error for our cancellation (it closes the
                    # connection on the way out): stopping wins over retrying
                    raise asyncio.CancelledError from exc
                if self.failing == 0:
                    log.warning("inbox.read_failed", error=type(exc).__name__)
                self.failing += 1
                self._reread_own = True
                self.inbox.reading = False
                await asyncio.sleep(min(0.25 * 2 ** min(self.failing, 4), 2.0))
                continue
            self.inbox.reading = True
            if self.failing:
                log.info("inbox.read_again", failed_reads=self.failing)
                self.failing = 0

    async def _claim_pass(self, shards: list[int]) -> None:
        started = time.monotonic()
        idle = self.inbox.claim_idle_s
        self._deliver(await self.inbox.claim(shards))
        self._next_claim = started + idle / 2
        if started >= self._next_cleanup:
            self._next_cleanup = started + CLEANUP_EVERY_S
            gone = await self.inbox.forget_idle_consumers(shards)
            if gone:
                log.debug("inbox.consumers_forgotten", count=gone)
        for handle in self._handles.values():
            actor = handle.actor
            dispatcher = actor.dispatcher
            if dispatcher is None:
                continue
            if actor.spec.mode == "webhook":
                # Telegram retries a chat's update while later ones of other chats
                # arrive, so an older id can always come: answered ids are kept a while
                dispatcher.age_answered(started, WEBHOOK_ANSWERED_S)
            elif actor.started_at + idle <= started:
                dispatcher.lift_floor()

    def _deliver(self, entries: list[Entry]) -> None:
        now_wall, now = time.time(), time.perf_counter()
        owned = set(self._shards())
        for entry in entries:
            handle = self._handles.get(entry.bot_id)
            dispatcher = handle.actor.dispatcher if handle is not None else None
            if dispatcher is None:
                if now_wall - entry.polled_at > STALE_S:
                    # its bot is gone for good (Telegram itself forgets an update in 24 h)
                    log.info("inbox.stale_dropped", bot_id=entry.bot_id, entry=entry.entry_id)
                    self.inbox.ack(entry.shard, entry.entry_id)
                elif entry.shard in owned and len(self._parked) < PARKED_MAX:
                    self._parked.append(entry)  # (re)starting here: offered again next round
                else:
                    self.absent += 1  # stays pending: a later claim pass offers it again
                continue
            received = now - max(0.0, now_wall - entry.polled_at)
            shard, entry_id = entry.shard, entry.entry_id
            verdict = dispatcher.offer(
                entry.update,
                partial(self.inbox.ack, shard, entry_id),
                received,
            )
            if verdict == "done":
                self.skipped += 1
                self.inbox.ack(shard, entry_id)
            else:
                self.offered += 1
