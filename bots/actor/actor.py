"""A bot actor: one per token. getMe handshake, long polling, per-chat handling.

Shape after pykka: `run_once()` = `_setup()` (getMe) -> `_running()` (poll loop)
-> `_teardown()` (drain handlers, save the confirm watermark). Supervision (restart
with backoff, 401 -> disabled) lives in `bots.actor.supervise`.

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
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

import structlog

from bots.actor.dispatch import ChatDispatcher
from bots.actor.inbox_poll import STOPPED, InboxSink, poll_into_inbox
from bots.actor.policy import Backoff, BackoffConfig
from bots.actor.stats import ActorStats
from bots.actor.webhook_mode import (
    InboxUnavailable,
    WebhookSetup,
    is_webhook_conflict,
    run_webhook,
)
from bots.handlers.base import BotContext, Handler
from bots.telegram.api import SENT_IN_TASK, BotApi
from bots.telegram.errors import (
    TRANSIENT,
    BotNetworkError,
    Conflict,
    RetryAfter,
    ServerError,
    TelegramError,
)
from bots.telegram.token import BotToken
from bots.telegram.update import Incoming
from config.logthrottle import THROTTLE
from ipc.fencing import LeaseChanged
from ipc.offsets import BotProgress, Snapshot

log = structlog.get_logger(__name__)


class ActorState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DISABLED = "disabled"


_ALLOWED: Final[Mapping[ActorState, frozenset[ActorState]]] = {
    ActorState.STARTING: frozenset(
        {ActorState.RUNNING, ActorState.BACKOFF, ActorState.DISABLED, ActorState.STOPPING}
    ),
    ActorState.RUNNING: frozenset({ActorState.BACKOFF, ActorState.DISABLED, ActorState.STOPPING}),
    ActorState.BACKOFF: frozenset({ActorState.STARTING, ActorState.STOPPING}),
    ActorState.STOPPING: frozenset({ActorState.STOPPED}),
    ActorState.STOPPED: frozenset(),
    ActorState.DISABLED: frozenset({ActorState.STOPPING, ActorState.STOPPED}),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class BotSpec:
    """What the registry says a bot should be. `revision` changes on every edit."""

    bot_id: int
    token: BotToken
    handler: str
    settings: Mapping[str, Any]
    revision: int
    #: known from registration: the actor then starts with a getUpdates, not a getMe
    username: str = ""
    #: how updates arrive: "polling" (getUpdates) or "webhook" (the ingress, via the inbox)
    mode: str = "polling"
    #: the webhook's secret_token (webhook mode only); never printed
    webhook_secret: str = field(default="", repr=False)


class ProgressStore(Protocol):
    """Where a bot's watermark and answered ids survive its actor (Redis in a worker)."""

    async def load(self, bot_id: int) -> BotProgress | None: ...

    async def load_many(self, bot_ids: list[int]) -> dict[int, BotProgress]: ...

    def mark(self, bot_id: int, snapshot: Snapshot) -> None: ...

    async def flush(self, timeout: float, stall_s: float | None = None) -> bool:
        """True once every mark so far is stored; gives up after `timeout`, or after
        `stall_s` without any write landing."""
        ...

    def lease_of(self, bot_id: int) -> int | None:
        """The epoch of this host's lease on the bot's shard (ipc/fencing.py); None: none."""
        ...

    def fenced(self, bot_id: int, lease: int | None = None) -> bool:
        """True while this host may no longer hold the bot's shard under `lease`."""
        ...

    async def wait_renewal(self) -> None: ...


class ChatSink(Protocol):
    """Where the chats a bot hears from are noted (the worker's chat recorder)."""

    def observe(self, bot_id: int, raw: dict[str, Any]) -> None: ...


class MemoryProgress:
    """Keeps progress in this process only (tests; an actor without a worker)."""

    def __init__(self) -> None:
        self.saved: dict[int, BotProgress] = {}

    async def load(self, bot_id: int) -> BotProgress | None:
        return self.saved.get(bot_id)

    async def load_many(self, bot_ids: list[int]) -> dict[int, BotProgress]:
        return {b: self.saved[b] for b in bot_ids if b in self.saved}

    def lease_of(self, bot_id: int) -> int | None:
        return None

    def fenced(self, bot_id: int, lease: int | None = None) -> bool:
        return False

    async def wait_renewal(self) -> None:
        return None

    def mark(self, bot_id: int, snapshot: Snapshot) -> None:
        progress = snapshot()
        if progress is not None:
            self.saved[bot_id] = progress

    async def flush(self, timeout: float, stall_s: float | None = None) -> bool:
        return True


#: `initial` not read in bulk by the fleet: the actor reads its own.
UNKNOWN: Final = object()


@dataclass(frozen=True, slots=True)
class PollConfig:
    poll_timeout_s: int
    inflight_max: int
    grace_s: float
    handler_retries: int = 3
    #: how long a stopping actor waits for its progress to reach Redis while writes land
    save_timeout_s: float = 5.0
    #: ... and how long without any write landing (a hung Redis) before it gives up
    save_stall_s: float = 1.0
    #: getUpdates failures (5xx, network) back off inside the poll loop up to this
    poll_backoff_max_s: float = 2.0


#: How long a poll waits for the batch in flight to finish before re-polling anyway.
POLL_GAP_S = 0.2

_STOPPED: Final = STOPPED


class BotActor:
    """Runs in the actor's own task (plus one task per busy chat)."""

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
        if new not in _ALLOWED[self.state]:
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

    def request_stop(self) -> None:
        """Ask the actor to stop polling, finish in-flight handlers and save its watermark.

        Interrupts a parked long poll by cancelling the actor's task while (and only
        while) it waits in `_interruptibly`; a cancelled poll confirms nothing.
        """
        self._stopping = True
        if self._stop_waiter is not None and not self._stop_waiter.done():
            self._stop_waiter.set_result(None)
        if self._interruptible and self._task is not None:
            self._task.cancel(msg="stop requested")

    @property
    def stop_requested(self) -> bool:
        return self._stopping

    async def wait_stop(self, timeout: float) -> bool:
        """Sleep up to `timeout` unless a stop is requested first; True if it was."""
        if self._stopping:
            return True
        self._stop_waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._stop_waiter
        except TimeoutError:
            return False
        finally:
            self._stop_waiter = None
        return True

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

    async def poll_once(self, params: dict[str, Any]) -> list[Any] | object | None:
        """One getUpdates: its updates, `STOPPED` on a requested stop, None after a
        failure it has waited out (Telegram's trouble: no restart, no getMe)."""
        if not await self._wait_unfenced():
            return STOPPED
        try:
            updates = await self._interruptibly(
                self.api.poll(params, timeout=self.poll.poll_timeout_s + 10)
            )
        except Conflict as exc:
            await self._drop_webhook(exc)
            return None
        except (RetryAfter, ServerError, BotNetworkError) as exc:
            if await self.wait_stop(self._poll_failed(exc)):
                return STOPPED
            return None
        if updates is STOPPED:
            return STOPPED
        if self.progress.fenced(self.spec.bot_id, self._lease):
            # the lease lapsed while we waited: leave the batch to the shard's new holder
            return STOPPED if not await self._wait_unfenced() else None
        if self.trouble:
            self._log.debug("poll.recovered", after=self.trouble)
            self.trouble, self._poll_backoff = "", None
        if not isinstance(updates, list):
            raise TelegramError(self.spec.bot_id, "getUpdates", 200, "result is not a list")
        return updates

    async def interruptibly(self, aw: Awaitable[Any]) -> Any:
        return await self._interruptibly(aw)

    async def _wait_unfenced(self) -> bool:
        """Runs in the actor's task: no poll while this host may have lost the bot's shard
        (a second poller would meet 409s). False when a stop came meanwhile."""
        bot_id, progress = self.spec.bot_id, self.progress
        while progress.fenced(bot_id, self._lease):
            held = progress.lease_of(bot_id)
            if held is not None and held >= 0 and held != self._lease:
                raise LeaseChanged(f"bot {bot_id}: lease {self._lease} -> {held}")
            self._log.debug("actor.fenced")
            if await self._interruptibly(progress.wait_renewal()) is _STOPPED:
                return False
        return True

    async def _running(self) -> None:
        dispatcher = self._dispatcher
        assert dispatcher is not None
        if self.spec.mode == "webhook":
            if self.webhook is None:
                raise TelegramError(
                    self.spec.bot_id, "setWebhook", 0, "webhook mode needs webhook.public_url"
                )
            secret = self.spec.webhook_secret
            await run_webhook(self, self.spec.bot_id, secret, self.webhook, dispatcher)
            return
        if self.inbox is not None:
            await poll_into_inbox(self, self.inbox, dispatcher)
            return
        poll_timeout = self.poll.poll_timeout_s + 10
        while not self._stopping:
            mark = dispatcher.progress()
            if dispatcher.inflight() >= self.poll.inflight_max:
                await self._interruptibly(dispatcher.wait_progress(mark))
                continue
            if dispatcher.inflight():
                # Telegram hands unconfirmed updates out again: let the batch in flight
                # finish (briefly) so the next poll confirms it instead of re-fetching it.
                await self._interruptibly(dispatcher.wait_idle(POLL_GAP_S))
                if self._stopping:
                    break
                mark = dispatcher.progress()
            params: dict[str, Any] = {
                "timeout": self.poll.poll_timeout_s,
                "limit": min(100, self.poll.inflight_max - dispatcher.inflight()),
            }
            offset = dispatcher.watermark()
            if offset is not None:
                params["offset"] = offset
            if not await self._wait_unfenced():
                break
            try:
                updates = await self._interruptibly(self.api.poll(params, timeout=poll_timeout))
            except Conflict as exc:
                await self._drop_webhook(exc)
                if self.webhook is not None:
                    # the webhook's leftovers are in the inbox: what we poll now must queue
                    # behind them in each chat, so this run polls into the inbox too
                    await poll_into_inbox(self, self.webhook.sink, dispatcher)
                    return
                continue
            except (RetryAfter, ServerError, BotNetworkError) as exc:
                # Telegram's trouble, not ours: wait inside the loop (no restart, no getMe)
                if await self.wait_stop(self._poll_failed(exc)):
                    break
                continue
            if updates is _STOPPED:
                break  # the cancelled poll confirmed nothing
            if self.progress.fenced(self.spec.bot_id, self._lease):
                continue  # lapsed while polling: handle nothing, the new holder will
            if self.trouble:
                self._log.debug("poll.recovered", after=self.trouble)
                self.trouble, self._poll_backoff = "", None
            if not isinstance(updates, list):
                raise TelegramError(self.spec.bot_id, "getUpdates", 200, "result is not a list")
            if updates and dispatcher.submit(updates) == 0:
                # only re-deliveries of updates still in flight: wait for one to finish
                # rather than re-poll in a hot loop
                await self._interruptibly(dispatcher.wait_progress(mark))

    async def _drop_webhook(self, exc: Conflict) -> None:
        """A 409 to getUpdates. "webhook is active": this bot is to poll (a switch from
        webhook mode, or a webhook someone else set), so delete it — pending updates stay
        with Telegram — and poll from the watermark. Another poller's 409 is raised."""
        if not is_webhook_conflict(exc):
            raise exc
        self._log.info("poll.webhook_deleted", reason="bot is in polling mode")
        await self.api.call("deleteWebhook", {"drop_pending_updates": False})
        await self._catch_up_after_webhook()

    async def _catch_up_after_webhook(self) -> None:
        """What the webhook left undelivered — a chat's update Telegram was still retrying
        may be older than updates already answered — goes into the inbox behind what the
        webhook delivered (per-chat order), trusted past the watermark (which the answered
        ones moved beyond it), and is confirmed once queued; from the earliest unconfirmed
        update on (no offset)."""
        dispatcher = self._dispatcher
        setup = self.webhook
        assert dispatcher is not None
        if setup is None:
            return  # no inbox on this host: the poll loop takes them (watermark rules)
        offset: int | None = None
        while not self._stopping:
            params: dict[str, Any] = {"timeout": 0, "limit": 100}
            if offset is not None:
                params["offset"] = offset
            updates = await self.api.call("getUpdates", params)
            batch = [u for u in updates or () if isinstance(u, dict)]
            ids = [u["update_id"] for u in batch if isinstance(u.get("update_id"), int)]
            if not ids:
                break  # that call confirmed everything queued below `offset`
            dispatcher.trust(ids)
            if not await setup.sink.append(self.spec.bot_id, batch):
                raise InboxUnavailable(f"bot {self.spec.bot_id}: inbox unavailable after webhook")
            offset = max(ids) + 1

    def _poll_failed(self, exc: RetryAfter | ServerError | BotNetworkError) -> float:
        """How long to wait after a failed getUpdates: Telegram's retry_after for a 429,
        else a jittered backoff (a fleet-wide outage must not end in a synchronized
        stampede) capped low, so polling resumes within seconds of the outage's end."""
        self.stats.poll_errors += 1
        if isinstance(exc, RetryAfter):
            self.trouble = "429"
            return exc.retry_after
        self.trouble = exc.cause if isinstance(exc, BotNetworkError) else str(exc.code)
        if self._poll_backoff is None:
            self._poll_backoff = Backoff(
                BackoffConfig(0.5, max(0.5, self.poll.poll_backoff_max_s), jitter=0.5)
            )
        return self._poll_backoff.next_delay()

    async def _interruptibly(self, aw: Awaitable[Any]) -> Any:
        """Await `aw`; a `request_stop` meanwhile ends the wait with `_STOPPED`."""
        self._interruptible = True
        try:
            return await aw
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopping and task is not None and task.uncancel() == 0:
                return _STOPPED
            raise
        finally:
            self._interruptible = False

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
            if not saved:
                THROTTLE.warning(self._log, "actor.progress_not_saved")

    # -- handling ---------------------------------------------------------------------------

    def _progressed(self) -> None:
        """An update finished: its id joins the record the next flush writes."""
        if self._dispatcher is not None and self._lease_current():
            self.progress.mark(self.spec.bot_id, self._dispatcher.record)

    def _lease_current(self) -> bool:
        """This run's record may be written: its shard is still held under its lease (a
        stale run's record would overwrite the newer holder's, under the new epoch)."""
        return self.progress.lease_of(self.spec.bot_id) == self._lease

    async def _fence(self) -> None:
        """Runs in a chat's task: returns at once while this host surely holds the bot's
        shard, else waits for a renewal (or the cancel of a stop)."""
        while self.progress.fenced(self.spec.bot_id, self._lease):
            await self.progress.wait_renewal()  # a stale lease never comes back: cancelled

    async def _handle(self, update: Incoming) -> None:
        """Runs in the chat's task. Never raises.

        Sends retry on their own (limiter, 429, transient errors: `BotApi.send`). The
        handler as a whole is run again only while it has sent nothing, so a transient
        failure after a reply never answers the update twice.
        """
        # queued before a pause that outlived the lease: answered by the new holder unless
        # the lease is renewed (a cancel at stop leaves it unconfirmed)
        await self._fence()
        if self.chats is not None:
            self.chats.observe(self.spec.bot_id, update.raw)
        ctx = BotContext(self.spec.bot_id, self.username, self.api, self.spec.settings)
        for attempt in range(self.poll.handler_retries + 1):
            SENT_IN_TASK.set(0)
            try:
                await self.handler.handle(update, ctx)
            except TRANSIENT as exc:
                if attempt == self.poll.handler_retries or SENT_IN_TASK.get():
                    self.stats.dropped += 1
                    THROTTLE.warning(
                        self._log,
                        "update.unanswered",
                        update_id=update.update_id,
                        error=type(exc).__name__,
                        sent_before=SENT_IN_TASK.get(),
                    )
                    return
                await asyncio.sleep(min(0.5 * 2**attempt, 5.0))
            except TelegramError as exc:
                self.stats.handler_errors += 1
                THROTTLE.warning(
                    self._log,
                    "update.telegram_error",
                    update_id=update.update_id,
                    code=exc.code,
                    description=exc.description,
                )
                return
            except Exception:  # noqa: BLE001 - a handler bug fails one update, not the bot
                self.stats.handler_errors += 1
                self._log.exception("update.handler_error", update_id=update.update_id)
                return
            else:
                break
        self.stats.handled += 1
        self.stats.latency.append(time.perf_counter() - update.received)
