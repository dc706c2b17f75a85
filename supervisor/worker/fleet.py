"""A worker's bots: one BotHandle per bot id, started, retuned and stopped by plan.

Runs in the worker's event loop. Owns no process state; the worker owns the
HTTP pool and hands it in.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import aiohttp
import structlog

from bots.actor.actor import BotActor
from bots.actor.dispatch import ChatDispatcher
from bots.actor.handling import ChatSink
from bots.actor.inbox_poll import InboxSink
from bots.actor.policy import BackoffConfig
from bots.actor.progress_store import MemoryProgress, ProgressStore
from bots.actor.spec import BotSpec, PollConfig
from bots.actor.state import ActorState
from bots.actor.supervise import BotHandle, OnDisabled, SpawnRejected, spawn
from bots.actor.webhook_mode import WebhookSetup
from bots.handlers.base import HandlerDeps, UnknownHandler
from bots.handlers.metering import MeteredHandler
from bots.handlers.plugins import preload, use_paths
from bots.handlers.registry import HANDLERS, make_handler
from bots.telegram.net import NetOptions
from bots.telegram.sessions import SessionPool
from config import Settings
from config.bot_settings import BadBotSettings, TelegramOverride, ratelimit_for, telegram_for
from ipc.offsets import BotProgress
from ratelimit import BotLimiter, Limits
from supervisor.worker.bot_figures import BotFigures
from supervisor.worker.bounds import GatedBotApi, WorkerBounds
from supervisor.worker.plan import Plan

log = structlog.get_logger(__name__)


def limits_for(settings: Settings, bot_settings: Mapping[str, Any]) -> Limits:
    """The bot's rate limits: config/bot_settings.py validates them, for the API too."""
    return Limits.from_settings(ratelimit_for(settings, bot_settings))


@dataclass(slots=True)
class Totals:
    """Cumulative counters of this worker (heartbeats carry them; the master diffs)."""

    received: int = 0
    duplicates: int = 0
    handled: int = 0
    dropped: int = 0
    handler_errors: int = 0
    sent: int = 0
    telegram_429: int = 0
    conflicts: int = 0
    limiter_waits: int = 0
    restarts: int = 0
    poll_errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        """Every counter by name (what heartbeats carry)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "latencies"}


class Fleet:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionPool,
        on_disabled: OnDisabled,
        progress: ProgressStore | None = None,
        handler_deps: HandlerDeps | None = None,
        inbox: InboxSink | None = None,
        chats: ChatSink | None = None,
        webhook: WebhookSetup | None = None,
    ) -> None:
        self.settings = settings
        #: the worker's chat recorder, handed to every actor
        self.chats = chats
        #: the durable inbox for polled updates, when `bots.inbox` was on at the worker's start
        self.inbox = inbox
        #: webhook mode's settings and inbox, when `webhook.public_url` was set at the start
        self.webhook = webhook
        #: the worker's pools by way out; a bot with its own proxy uses its own
        self.sessions = sessions
        self._nets: dict[NetOptions, NetOptions] = {}  # one shared instance per value
        self.progress: ProgressStore = progress or MemoryProgress()
        self.handler_deps = handler_deps or HandlerDeps()
        self.on_disabled = on_disabled
        use_paths(settings.handlers.paths)  # where handler references import from
        self.handles: dict[int, BotHandle] = {}
        self.totals = Totals()
        #: per-bot figures for the dashboard (heartbeat `per_bot`)
        self.figures = BotFigures()
        self._spawn_gate = asyncio.Semaphore(settings.bots.spawn_concurrency)
        self.bounds = WorkerBounds(settings)
        ChatDispatcher.budget = self.bounds.queue  # every actor's dispatcher counts in it

    def _net_for(self, way: TelegramOverride) -> tuple[NetOptions, aiohttp.ClientSession]:
        """The bot's way out: its (shared) NetOptions and the aiohttp pool that goes that way."""
        net = NetOptions.from_settings(self.settings, way.proxy)
        net = self._nets.setdefault(net, net)
        return net, self.sessions.for_net(net)

    def running_specs(self) -> dict[int, BotSpec]:
        return {bot_id: h.actor.spec for bot_id, h in self.handles.items()}

    def counts(self) -> dict[str, int]:
        c = Counter(str(h.state) for h in self.handles.values())
        return {str(s): c.get(str(s), 0) for s in ActorState}

    def troubles(self) -> dict[str, int]:
        """Running bots whose getUpdates is failing now, by reason ("429", "502", …)."""
        return dict(Counter(h.actor.trouble for h in self.handles.values() if h.actor.trouble))

    def retune_all(self, settings: Settings) -> None:
        """New deployment settings (reload): new limits for every bot, in place."""
        self.settings = settings
        use_paths(settings.handlers.paths)
        self.bounds.retune(settings)
        for h in self.handles.values():
            self._retune(h, h.actor.spec)

    def _retune(self, handle: BotHandle, spec: BotSpec) -> None:
        """Settings-only change: new limits in place, the poll keeps running. Invalid
        per-bot limits keep the running ones (the bot already runs, so don't stop it)."""
        handle.actor.spec = spec
        try:
            handle.actor.api.limiter.retune(limits_for(self.settings, spec.settings))
        except BadBotSettings as exc:
            log.error(
                "bot.settings_rejected", bot_id=spec.bot_id, error=str(exc), kept="running limits"
            )

    async def apply(self, plan: Plan) -> None:
        """Stop before start, so a restarted bot never polls twice."""
        doomed = [*plan.stop, *(s.bot_id for s in plan.restart)]
        await asyncio.gather(*(self._stop(bot_id) for bot_id in doomed))
        for spec in plan.retune:
            handle = self.handles.get(spec.bot_id)
            if handle is not None:
                self._retune(handle, spec)
        starting = [*plan.start, *plan.restart]
        # every starting bot's progress in bulk: none of them does a read of its own
        known = await self.progress.load_many([s.bot_id for s in starting]) if starting else {}
        await asyncio.gather(*(self._start(spec, known.get(spec.bot_id)) for spec in starting))

    async def wait_progress_saved(self, within_s: float) -> bool:
        """Runs in the worker's loop. True once every progress mark made so far is in the
        store, retrying failed flushes; False if not within `within_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while (left := deadline - loop.time()) > 0:
            if await self.progress.flush(min(left, 5.0)):
                return True
            await asyncio.sleep(min(0.2, max(deadline - loop.time(), 0)))  # a failed write
        return False

    async def stop_all(self) -> None:
        """The worker's drain: it waits for every record itself (`wait_progress_saved`),
        where thousands of actors' own one-second saves at once can run out."""
        await asyncio.gather(
            *(self._stop(bot_id, caller_saves=True) for bot_id in list(self.handles))
        )

    async def _stop(self, bot_id: int, caller_saves: bool = False) -> None:
        handle = self.handles.get(bot_id)
        if handle is None:
            return
        await handle.stop(caller_saves)
        self._fold(handle)
        self.handles.pop(bot_id, None)
        if self.handler_deps.context is not None:
            self.handler_deps.context.forget_bot(bot_id)

    async def _start(self, spec: BotSpec, progress: BotProgress | None = None) -> None:
        if spec.bot_id in self.handles:
            return
        if spec.handler not in HANDLERS:
            await preload(spec.handler)  # a plugin's first import runs off the loop
        llm = self.handler_deps.llm
        if spec.handler == "openai" and llm is not None:
            await llm.warm()  # so does openai's, before the bot's first completion
        try:
            handler = make_handler(spec.handler, self.handler_deps)
            usage = self.handler_deps.usage
            if usage is not None and spec.handler != "manager":  # owners manage past quotas
                handler = MeteredHandler(handler, usage)
            limiter = BotLimiter(limits_for(self.settings, spec.settings))
            way = telegram_for(self.settings, spec.settings)
        except (UnknownHandler, BadBotSettings) as exc:
            # this bot's own data is wrong: disable it with the reason, start the others
            await self.on_disabled(spec.bot_id, str(exc))
            return
        tg = self.settings.telegram
        net, session = self._net_for(way)
        api = GatedBotApi(
            session,
            way.api_base,
            spec.token,
            limiter,
            request_timeout=tg.request_timeout_s,
            max_retries=tg.max_retries,
            send_deadline_s=tg.send_deadline_s,
            gate=self.bounds.queue,
            net=net,
            sender=self.sessions.sender(way.api_base, net),
        )
        poll = PollConfig(
            poll_timeout_s=tg.poll_timeout_s,
            inflight_max=self.settings.bots.inflight_max,
            grace_s=self.settings.shutdown.grace_s,
            # a hung Redis must not hold a stopping worker (SIGTERM acts within a second),
            # but a busy one whose writes still land is waited for: a whole fleet stopping
            # at once on a loaded machine has outlasted a second (actor.progress_not_saved
            # in bench/RESULTS.md at 10,000 bots, and after a master SIGKILL with the inbox)
            save_timeout_s=self.settings.redis.timeout_s,
            save_stall_s=min(1.0, self.settings.redis.timeout_s),
        )
        handle = BotHandle(
            BotActor(
                spec,
                api,
                handler,
                poll,
                self.progress,
                progress,
                self.inbox,
                self.chats,
                self.webhook,
            )
        )
        self.handles[spec.bot_id] = handle
        backoff = BackoffConfig(self.settings.bots.backoff_min_s, self.settings.bots.backoff_max_s)
        async with self._spawn_gate:
            try:
                await spawn(handle, backoff, self.on_disabled)
            except SpawnRejected as exc:
                log.warning("bot.rejected", bot_id=spec.bot_id, reason=exc.reason)

    def harvest(self) -> list[float]:
        """Fold every actor's counters into `totals`; returns the new latency samples."""
        for handle in self.handles.values():
            self._fold(handle)
        self.bounds.enforce(h.actor.api.limiter for h in self.handles.values())
        self.bounds.export(self.handler_deps.context)
        samples, self.totals.latencies = self.totals.latencies, []
        return samples

    def _fold(self, handle: BotHandle) -> None:
        """Take and zero the actor's counters (the hot path only ever increments them)."""
        t, a, api = self.totals, handle.actor.stats, handle.actor.api.stats
        errors = a.handler_errors + a.poll_errors
        if a.received or api.sent or api.telegram_429 or errors:
            self.figures.record(handle.bot_id, a.received, api.sent, api.telegram_429, errors)
        t.received += a.received
        t.duplicates += a.duplicates
        t.handled += a.handled
        t.dropped += a.dropped
        t.handler_errors += a.handler_errors
        t.poll_errors += a.poll_errors
        a.received = a.duplicates = a.handled = a.dropped = a.handler_errors = 0
        a.poll_errors = 0
        if a.latency:
            t.latencies.extend(a.latency)
            a.latency = []
        t.sent += api.sent
        t.telegram_429 += api.telegram_429
        api.sent = api.telegram_429 = 0
        waits = handle.actor.api.limiter.waits
        t.limiter_waits += waits - handle.limiter_waits_seen
        handle.limiter_waits_seen = waits
        t.conflicts += handle.conflicts
        t.restarts += handle.restarts
        handle.conflicts = handle.restarts = 0
