"""A worker's heartbeat, written from its loop so a blocked loop shows as a stale beat.

Each beat goes down the pipe to the master first (liveness, whatever Redis does), then to
Redis (`botvisor status`) and Prometheus; the fleet's picture and the context store's
health are logged when they change. `WorkerHeartbeats` is a base of `Worker`
(supervisor/worker/worker.py), which sets the fields declared here and opens the services
they read.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis

from config import Settings
from ipc import keys
from ipc.heartbeat import PER_BOT_MAX, Heartbeat, HeartbeatSender
from supervisor.failures import redis_address
from supervisor.worker.ticker import ticker

if TYPE_CHECKING:
    from bots.llm.client import LLMClient
    from context import ContextStore
    from ipc.inbox import Inbox
    from supervisor.worker.context_metrics import ContextMetrics
    from supervisor.worker.fleet import Fleet

#: The worker's one-line picture of its fleet is logged at most this often.
FLEET_LOG_EVERY_S = 10.0


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class WorkerHeartbeats:
    """The heartbeat loop and what a beat carries; a base of `Worker`."""

    # set by Worker (supervisor/worker/worker.py), the services once they are open
    settings: Settings
    index: int
    host: str
    shards: list[int]
    epoch: int
    state: str
    desired: int
    fleet: Fleet
    redis: aioredis.Redis
    context: ContextStore | None
    llm: LLMClient | None
    inbox: Inbox | None
    _context_metrics: ContextMetrics
    _drain: asyncio.Event
    _ppid: int
    _log: Any

    def __init__(self, sparse_figures: bool) -> None:
        #: the master keeps per-bot figures between beats (pipe `Configure.sparse_figures`)
        self._sparse_figures = sparse_figures
        self._beats: HeartbeatSender | None = None
        self._redis_beat_failures = 0
        self._fleet_logged: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self._fleet_logged_at = -FLEET_LOG_EVERY_S
        self.loop_lag = 0.0
        self._exported: dict[str, int] = {}  # counters already added to Prometheus
        self._last_health: dict[str, str] = {}  # the layers' states last logged
        self._window: list[float] = []
        self._last_heartbeat: Heartbeat | None = None
        self._rate_base: tuple[float, dict[str, int]] = (time.monotonic(), {})

    async def _heartbeat_loop(self) -> None:
        """Written from this loop, so a blocked loop shows as a stale heartbeat."""
        interval = self.settings.workers.heartbeat_interval_s
        expected = time.monotonic()
        async for now in ticker(interval):
            self.loop_lag = max(0.0, now - expected)
            expected = now + interval
            if os.getppid() != self._ppid:
                self._log.error("worker.orphaned")
                self._drain.set()
            await self._write_heartbeat()
            self._log_fleet(now)

    def _log_fleet(self, now: float) -> None:
        """One INFO line per worker when its fleet's picture changes (at most every
        FLEET_LOG_EVERY_S): per-bot lifecycle lines are DEBUG."""
        hb = self._last_heartbeat
        if hb is None or now - self._fleet_logged_at < FLEET_LOG_EVERY_S:
            return
        picture = {s: n for s, n in hb.bots.items() if n}
        troubles = self.fleet.troubles()
        if (picture, troubles) == self._fleet_logged:
            return
        self._fleet_logged, self._fleet_logged_at = (picture, troubles), now
        self._log.info("worker.fleet", **picture, polling_failing=troubles or None)

    async def _write_heartbeat(self, redis_timeout: float | None = None) -> None:
        from supervisor.metrics import metrics

        samples = self.fleet.harvest()
        m = metrics()
        t = self.fleet.totals
        self._window = (self._window + samples)[-2000:]
        window = sorted(self._window)
        if samples:
            for v in samples:
                m.latency.observe(v)
        hb = Heartbeat(
            index=self.index,
            epoch=self.epoch,
            pid=os.getpid(),
            state=self.state,
            shards=self.shards,
            desired=self.desired,
            bots=self.fleet.counts(),
            loop_lag_s=round(self.loop_lag, 4),
            at=time.time(),
            totals=t.counters(),
            p50_ms=round(_percentile(window, 0.5) * 1000, 2),
            p99_ms=round(_percentile(window, 0.99) * 1000, 2),
            health=self._health(),
        )
        if self._figures_due():
            busy, idle, omitted = self.fleet.figures.snapshot(self.fleet.handles, PER_BOT_MAX)
            hb = replace(hb, per_bot=busy, per_bot_idle=idle, per_bot_omitted=omitted)
        else:
            hb = replace(hb, per_bot_included=False)
        hb.rates.update(self._rates(hb.totals))
        self._last_heartbeat = hb
        if self._beats is not None:
            self._beats.send(hb)  # liveness: the pipe first, whatever Redis does
        self._export(hb)
        await self._store_heartbeat(hb, redis_timeout or self.settings.redis.timeout_s)

    def _figures_due(self) -> bool:
        """Per-bot figures in this beat? Every `dashboard.poll_interval_s` (what open pages
        ask for) to a master that keeps them between beats; in every beat to an older one."""
        if not self.settings.dashboard.enabled:
            return False
        if not self._sparse_figures:
            return True
        every = self.settings.dashboard.poll_interval_s
        return self.fleet.figures.due(every, self.settings.workers.heartbeat_interval_s / 2)

    async def _store_heartbeat(self, hb: Heartbeat, timeout: float) -> None:
        """The copy in Redis serves `botvisor status`; its failures are logged when they
        start and when they end (with a count), never once per beat. A failure also tells
        the context store, so the worker's health says "redis degraded" even while no
        chat is writing."""
        key = keys.heartbeat_key(self.settings.redis.prefix, self.host, self.index)
        ttl = max(int(self.settings.workers.heartbeat_timeout_s * 3), 3)
        try:
            async with asyncio.timeout(timeout):
                await self.redis.set(key, orjson.dumps(hb.summary()), ex=ttl)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            if self.context is not None:
                self.context.redis_failed(exc)
            if self._redis_beat_failures == 0:
                self._log.warning(
                    "heartbeat.redis_unavailable",
                    redis=redis_address(self.settings),
                    error=type(exc).__name__,
                )
            self._redis_beat_failures += 1
            return
        if self._redis_beat_failures:
            self._log.info("heartbeat.redis_back", failed_beats=self._redis_beat_failures)
            self._redis_beat_failures = 0

    def _health(self) -> dict[str, str | int]:
        """The context store's layers; logged when a layer's state changes, not when only
        a count of queued writes does (a degraded layer makes /readyz 503 with the reason)."""
        context = self.context
        health: dict[str, str | int] = dict(context.health()) if context is not None else {}
        if self.inbox is not None:
            # not a /readyz layer: a failing append falls back to confirm-after-handling
            health["inbox"] = self.inbox.health()
        states = {k: v for k, v in health.items() if isinstance(v, str)}
        if states != self._last_health:
            self._log.info("worker.health", **health)
            self._last_health = states
        return health

    def _rates(self, totals: dict[str, int]) -> dict[str, float]:
        """Per-second rates since the previous heartbeat."""
        now = time.monotonic()
        then, before = self._rate_base
        self._rate_base = (now, dict(totals))
        span = max(now - then, 1e-3)
        return {
            f"{name}_per_s": round((totals[name] - before.get(name, 0)) / span, 1)
            for name in ("received", "sent", "limiter_waits", "telegram_429")
        }

    def _export(self, hb: Heartbeat) -> None:
        from supervisor.metrics import metrics

        m = metrics()
        prev = self._exported
        for name, counter in (
            ("received", m.updates_received),
            ("duplicates", m.updates_duplicate),
            ("handled", m.updates_handled),
            ("dropped", m.updates_dropped),
            ("handler_errors", m.handler_errors),
            ("sent", m.messages_sent),
            ("telegram_429", m.telegram_429),
            ("conflicts", m.conflicts),
            ("limiter_waits", m.limiter_waits),
            ("restarts", m.actor_restarts),
            ("poll_errors", m.poll_errors),
        ):
            delta = hb.totals.get(name, 0) - prev.get(name, 0)
            if delta > 0:
                counter.inc(delta)
        self._exported = dict(hb.totals)
        for state, n in hb.bots.items():
            m.bots.labels(state=state).set(n)
        m.loop_lag.labels(worker=str(self.index)).set(hb.loop_lag_s)
        self._context_metrics.export(self.context, self.llm)
