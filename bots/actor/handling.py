"""How a bot actor handles one update, in the chat's task (`BotActor._handle`, handed to
its `ChatDispatcher`): the lease fence, the chat noted, the handler run — again after a
transient failure only while it has sent nothing — and the progress marked once done.
A part of `BotActor` (bots/actor/actor.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from bots.actor.dispatch import ChatDispatcher
from bots.actor.progress_store import ProgressStore
from bots.actor.spec import BotSpec, PollConfig
from bots.actor.stats import ActorStats
from bots.handlers.base import BotContext, Handler
from bots.telegram.api import SENT_IN_TASK, BotApi
from bots.telegram.errors import TRANSIENT, TelegramError
from bots.telegram.update import Incoming
from config.logthrottle import THROTTLE


class ChatSink(Protocol):
    """Where the chats a bot hears from are noted (the worker's chat recorder)."""

    def observe(self, bot_id: int, raw: dict[str, Any]) -> None: ...


class UpdateHandling:
    """`BotActor` sets these in its constructor and its runs."""

    spec: BotSpec
    api: BotApi
    handler: Handler
    poll: PollConfig
    progress: ProgressStore
    chats: ChatSink | None
    stats: ActorStats
    username: str
    _lease: int | None
    _dispatcher: ChatDispatcher | None
    _log: Any

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
