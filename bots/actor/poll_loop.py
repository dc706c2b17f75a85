"""How a running bot actor gets its updates, and how a stop interrupts its waits.

Polling: getUpdates from the dispatcher's watermark, the batch in flight given a moment
to finish so the next poll confirms it, Telegram's trouble (429, 5xx, network) waited
out inside the loop. With the durable inbox on the loop is `poll_into_inbox`
(bots/actor/inbox_poll.py); in webhook mode `run_webhook` (bots/actor/webhook_mode.py).
A 409 "webhook is active" is a switch back from webhook mode: the webhook is deleted and
what it left undelivered queued behind what it delivered. A part of `BotActor`
(bots/actor/actor.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Final

from bots.actor.dispatch import ChatDispatcher
from bots.actor.inbox_poll import STOPPED, InboxSink, poll_into_inbox
from bots.actor.policy import Backoff, BackoffConfig
from bots.actor.progress_store import ProgressStore
from bots.actor.spec import BotSpec, PollConfig
from bots.actor.stats import ActorStats
from bots.actor.webhook_mode import (
    InboxUnavailable,
    WebhookSetup,
    is_webhook_conflict,
    run_webhook,
)
from bots.telegram.api import BotApi
from bots.telegram.errors import BotNetworkError, Conflict, RetryAfter, ServerError, TelegramError
from ipc.fencing import LeaseChanged

#: How long a poll waits for the batch in flight to finish before re-polling anyway.
POLL_GAP_S = 0.2

_STOPPED: Final = STOPPED


class PollLoop:
    """`BotActor` sets these in its constructor and its runs."""

    spec: BotSpec
    api: BotApi
    poll: PollConfig
    progress: ProgressStore
    inbox: InboxSink | None
    webhook: WebhookSetup | None
    stats: ActorStats
    trouble: str
    _lease: int | None
    _dispatcher: ChatDispatcher | None
    _poll_backoff: Backoff | None
    _stopping: bool
    _stop_waiter: asyncio.Future[None] | None
    _task: asyncio.Task[Any] | None
    _interruptible: bool
    _log: Any

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
