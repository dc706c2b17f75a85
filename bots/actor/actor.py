"""A bot actor: one per token. getMe handshake, long polling, per-chat handling.

Shape after pykka: `run_once()` = `_setup()` (getMe) -> `_running()` (poll loop)
-> `_teardown()` (drain handlers, save the confirm watermark). Supervision (restart
with backoff, 401 -> disabled) lives in `bots.actor.supervise`. `BotActor` keeps the
lifecycle; the poll loop and a stop's interruptions are `PollLoop` (poll_loop.py), the
handling of one update `UpdateHandling` (handling.py).

Progress — the watermark (oldest unhandled update id) and the ids answered above it —
is marked in a `ProgressStore` after every handled update (written by the worker's
coalescing flusher) and flushed on stop; it is read on start, so the next poller of
this bot, in this process or another, confirms what was handled with its first
getUpdates and never answers a re-delivered update again. Confirming with a getUpdates of our own
at stop would terminate our just-cancelled long poll: a self-inflicted 409.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import structlog

from bots.actor.dispatch import ChatDispatcher
from bots.actor.handling import ChatSink, UpdateHandling
from bots.actor.inbox_poll import InboxSink
from bots.actor.policy import Backoff
from bots.actor.poll_loop import PollLoop
from bots.actor.progress_store import MemoryProgress, ProgressStore
from bots.actor.spec import BotSpec, PollConfig
from bots.actor.state import ALLOWED, ActorState, IllegalTransition
from bots.actor.stats import ActorStats
from bots.actor.webhook_mode import WebhookSetup
from bots.handlers.base import Handler
from bots.telegram.api import BotApi
from config.logthrottle import THROTTLE
from ipc.offsets import BotProgress

log = structlog.get_logger(__name__)

#: `initial` not read in bulk by the fleet: the actor reads its own.
UNKNOWN: Final = object()


class BotActor(PollLoop, UpdateHandling):
    """Runs in the actor's own task (plus one task per busy chat)."""

    #: set by a stop whose caller waits for the progress store itself (class default:
    #: no per-bot attribute until then)
    caller_saves: bool = False

    def __init__(
        self,
        spec: BotSpec,
        api: BotApi,
        handler: Handler,
        poll: PollConfig,
        progress: ProgressStore | None = None,
        initial: BotProgress | None | object = UNKNOWN,
        inbox: InboxSink | None = None,
        chats: ChatSink | None = None,
        webhook: WebhookSetup | None = None,
    ) -> None:
        self.spec = spec
        #: notes every update's chat (the `chats` table, the audience of broadcasts)
        self.chats = chats
        #: the host's webhook settings (webhook mode; None when `webhook.public_url` is unset)
        self.webhook = webhook
        #: the durable inbox (bots.inbox): polled updates go there, handled from there
        self.inbox = inbox
        self.started_at = 0.0  # monotonic start of the current run
        self.progress: ProgressStore = progress or MemoryProgress()
        #: read in bulk by the fleet for the first run; later runs read their own
        self._initial = initial
        self.api = api
        api.fence = self._fence
        #: the lease epoch of the bot's shard this run started under (fencing token)
        self._lease: int | None = None
        self.handler = handler
        self.poll = poll
        self.state = ActorState.STARTING
        self.reason = ""
        self.username = ""
        # Created on demand: an idle bot should not pay ~0.9 KiB per asyncio.Event.
        self._changed: asyncio.Event | None = None
        self._stopping = False
        self._stop_waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._interruptible = False
        self._dispatcher: ChatDispatcher | None = None
        self.stats = ActorStats()
        #: why getUpdates is failing right now ("" while it works): "429", "502", "timeout"…
        self.trouble = ""
        self._poll_backoff: Backoff | None = None
        self._log = log.bind(bot_id=spec.bot_id)

    # -- lifecycle --------------------------------------------------------------------------

    def set_state(self, new: ActorState, reason: str = "") -> None:
        """The only writer of `state`: checks the transition table and logs it once."""
        if new is self.state:
            return
        if new not in ALLOWED[self.state]:
            raise IllegalTransition(f"bot {self.spec.bot_id}: {self.state} -> {new}")
        self._log.debug("actor.state", old=str(self.state), new=str(new), reason=reason)
        self.state, self.reason = new, reason
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next state change (spawn and tests wait on it)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def run_once(self) -> None:
        """One life of the actor. Returns on a requested stop; raises on failure."""
        self._task = asyncio.current_task()
        self.started_at = time.monotonic()
        self._dispatcher = ChatDispatcher(
            self.spec.bot_id, self._handle, self.stats, self._progressed
        )
        try:
            await self._setup()
            await self._running()
        finally:
            await asyncio.shield(self._teardown())

    async def _setup(self) -> None:
        """The handshake. With the username known from registration there is no getMe:
        the bot only opens its poll connection (so a worker starting 5,000 bots paces its
        connects through the start gate), and its first long poll, outside the gate, is
        the real check — a dead token answers 401 there as it would to getMe, and a bot
        with pending updates gets them at once. 5,000 requests fewer than a getMe or a
        zero-wait first poll per bot, none through the shared pool."""
        self._lease = self.progress.lease_of(self.spec.bot_id)
        initial, self._initial = self._initial, UNKNOWN
        if initial is UNKNOWN:
            initial = await self.progress.load(self.spec.bot_id)
        if isinstance(initial, BotProgress) and self._dispatcher is not None:
            self._dispatcher.start_at(initial.watermark, initial.done)
        if self.spec.username and self.spec.mode == "webhook":
            self.username = self.spec.username  # setWebhook is its token check
        elif self.spec.username:
            self.username = self.spec.username
            await self.api.open_poll(timeout=self.poll.poll_timeout_s + 10)
        else:
            me = await self.api.call("getMe")
            self.username = str(me.get("username", "")) if isinstance(me, dict) else ""
        self.set_state(ActorState.RUNNING, "handshake ok")

    @property
    def dispatcher(self) -> ChatDispatcher | None:
        """This run's dispatcher while the actor runs (the inbox reader hands it entries);
        None once a stop is asked, so a stopping actor drains what it has and the rest
        waits in the inbox for the next run."""
        if self.state is not ActorState.RUNNING or self._stopping:
            return None
        return self._dispatcher

    async def _teardown(self) -> None:
        self.api.close_poll()
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        # handlers held by the fence would only wait out the grace: their updates stay
        # unconfirmed for the shard's holder
        fenced = self.progress.fenced(self.spec.bot_id, self._lease)
        finished = await dispatcher.drain(0.0 if fenced else self.poll.grace_s)
        if not finished and not fenced:
            THROTTLE.warning(self._log, "actor.drain_timeout", grace_s=self.poll.grace_s)
        if self.state is not ActorState.DISABLED and self._lease_current():
            self.progress.mark(self.spec.bot_id, dispatcher.record)
            saved = await self.progress.flush(self.poll.save_timeout_s, self.poll.save_stall_s)
            if not saved and not self.caller_saves:
                THROTTLE.warning(self._log, "actor.progress_not_saved")
