"""Bounded memory per worker (issue 8, part 6), enforced and exported once a heartbeat.

* context cache: one byte budget across every bot (`context.cache_bytes_worker`,
  context/lru.py: CacheBudget); an evicted chat reloads from Redis;
* rate limiter: past `ratelimit.chat_keys_worker_max` chat keys in the worker, every
  bot's idle keys are evicted (keys still limiting a send stay: dropping one could earn
  a 429);
* dispatcher queues: updates received and not yet handled across the worker
  (`bots.queued_max_worker`, bots/actor/queue_budget.py: QueueBudget); past it every
  poll waits for room (`GatedBotApi`), so Telegram keeps the updates: none is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog

from bots.actor.queue_budget import QueueBudget
from bots.telegram.api import BotApi
from config import Settings

if TYPE_CHECKING:
    from context import ContextStore
    from ratelimit import BotLimiter

log = structlog.get_logger(__name__)


class GatedBotApi(BotApi):
    """A BotApi whose polls wait while the worker's queued updates are at the cap."""

    __slots__ = ("_gate",)

    def __init__(self, *args: Any, gate: QueueBudget, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate

    async def poll(self, params: dict[str, Any], *, timeout: float) -> Any:
        if self._gate.full():
            await self._gate.wait_room()
        return await super().poll(params, timeout=timeout)


class WorkerBounds:
    """The worker's caps; runs in the worker's loop (Fleet.harvest, every heartbeat)."""

    def __init__(self, settings: Settings) -> None:
        self.queue = QueueBudget(settings.bots.queued_max_worker)
        self.chat_keys_max = settings.ratelimit.chat_keys_worker_max
        #: chat keys held after the last enforce, and evicted so far
        self.chat_keys = 0
        self.chat_keys_evicted = 0
        self._exported: dict[str, int] = {}

    def retune(self, settings: Settings) -> None:
        self.chat_keys_max = settings.ratelimit.chat_keys_worker_max
        self.queue.max_queued = settings.bots.queued_max_worker
        self.queue.add(0)  # a raised cap wakes waiting polls

    def enforce(self, limiters: Iterable[BotLimiter]) -> None:
        """Count every bot's chat keys; past the cap, evict the idle ones everywhere."""
        limiters = list(limiters)
        total = sum(lim.chat_keys for lim in limiters)
        if total > self.chat_keys_max:
            evicted = sum(lim.evict_idle() for lim in limiters)
            self.chat_keys_evicted += evicted
            log.debug("ratelimit.keys_evicted", evicted=evicted, held=total - evicted)
            total -= evicted
        self.chat_keys = total

    def export(self, context: ContextStore | None) -> None:
        from supervisor.metrics import metrics

        m = metrics()
        m.ratelimit_chat_keys.set(self.chat_keys)
        m.queued_updates.set(self.queue.queued)
        self._add(m.ratelimit_keys_evicted, "keys", self.chat_keys_evicted)
        self._add(m.poll_pauses, "pauses", self.queue.pauses)
        if context is not None:
            budget = context.cache_budget
            m.context_cache_bytes.set(budget.bytes)
            m.context_cache_entries.set(len(budget))
            self._add(m.context_cache_evictions, "evictions", budget.evictions)

    def _add(self, counter: Any, name: str, total: int) -> None:
        delta = total - self._exported.get(name, 0)
        self._exported[name] = total
        if delta > 0:
            counter.inc(delta)
