"""Actor supervision: restart with backoff, 401 -> disabled, never let a failure escape.

A worker's must-live services run in its TaskGroup; bot actors run here instead,
so one bot's exception never reaches the TaskGroup (aiogram's FIRST_COMPLETED over
all bots is the anti-model).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from bots.actor.actor import BotActor
from bots.actor.policy import Backoff, BackoffConfig
from bots.actor.state import ActorState
from bots.telegram.errors import Conflict, TokenRejected
from config.logthrottle import THROTTLE
from ipc.fencing import LeaseChanged

log = structlog.get_logger(__name__)

#: An actor that ran this long without failing starts its backoff over.
STABLE_AFTER_S = 30.0

OnDisabled = Callable[[int, str], Awaitable[None]]


class BotHandle:
    """What the worker holds for a running bot: its actor and the supervising task."""

    __slots__ = ("actor", "conflicts", "limiter_waits_seen", "restarts", "task")

    def __init__(self, actor: BotActor) -> None:
        self.actor = actor
        self.task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.conflicts = 0
        self.limiter_waits_seen = 0

    @property
    def bot_id(self) -> int:
        return self.actor.spec.bot_id

    @property
    def state(self) -> ActorState:
        return self.actor.state

    async def stop(self, caller_saves: bool = False) -> None:
        """Stop polling, let handlers finish (up to the grace), confirm, wait for the task.
        `caller_saves`: the caller waits for the progress store itself afterwards (the
        worker's drain), so the actor's own bounded save need not warn when it runs out."""
        if caller_saves:
            self.actor.caller_saves = True
        self.actor.request_stop()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


async def supervise(handle: BotHandle, backoff: BackoffConfig, on_disabled: OnDisabled) -> None:
    """Runs in the actor's task for its whole life. Never raises (except cancellation)."""
    actor = handle.actor
    policy = Backoff(backoff)
    blog = log.bind(bot_id=actor.spec.bot_id)
    while True:
        started = time.monotonic()
        try:
            await actor.run_once()
        except TokenRejected as exc:
            reason = f"token rejected by Telegram ({exc.code} {exc.description})"
            actor.set_state(ActorState.DISABLED, reason)
            blog.info("actor.disabled", reason=reason)  # rare, and an operator acts on it
            try:
                await on_disabled(actor.spec.bot_id, reason)
            except Exception:  # noqa: BLE001 - recording is best effort; the actor stays disabled
                blog.exception("actor.disable_record_failed")
            return  # stays DISABLED: a revoked token never comes back
        except LeaseChanged as exc:
            # the shard changed hands while this run waited: a new run, from the stored
            # record, under the new lease (not a failure: no backoff, no warning)
            blog.debug("actor.lease_changed", reason=str(exc))
            if actor.stop_requested:
                break
            actor.set_state(ActorState.BACKOFF, "lease changed")
            actor.set_state(ActorState.STARTING, "restart")
            continue
        except Exception as exc:  # noqa: BLE001 - the supervision boundary: no actor failure escapes
            if time.monotonic() - started > STABLE_AFTER_S:
                policy.reset()
            delay = policy.next_delay()
            if isinstance(exc, Conflict):
                handle.conflicts += 1
                THROTTLE.warning(
                    blog, "actor.conflict", description=exc.description, retry_in_s=delay
                )
            else:
                THROTTLE.warning(
                    blog,
                    "actor.crashed",
                    error=str(exc),
                    kind=type(exc).__name__,
                    retry_in_s=round(delay, 2),
                )
            if actor.stop_requested:
                break
            actor.set_state(ActorState.BACKOFF, type(exc).__name__)
            if await actor.wait_stop(delay):
                break
            handle.restarts += 1
            actor.set_state(ActorState.STARTING, "restart")
            continue
        break
    actor.set_state(ActorState.STOPPING, "stop requested")
    actor.set_state(ActorState.STOPPED, "stopped")


async def spawn(handle: BotHandle, backoff: BackoffConfig, on_disabled: OnDisabled) -> BotHandle:
    """Start supervising; return once the actor is RUNNING (getMe ok) or backing off.

    Raises TokenRejected-equivalent `SpawnRejected` when the token is dead.
    """
    actor = handle.actor
    waiter = actor.changed  # taken before the task starts, so no change is missed
    handle.task = asyncio.create_task(
        supervise(handle, backoff, on_disabled), name=f"bot:{handle.bot_id}"
    )
    while actor.state is ActorState.STARTING:
        await waiter.wait()
        if actor.state is ActorState.STARTING:
            waiter = actor.changed
    if actor.state is ActorState.DISABLED:
        await asyncio.gather(handle.task, return_exceptions=True)
        raise SpawnRejected(handle.bot_id, actor.reason)
    return handle


class SpawnRejected(Exception):
    def __init__(self, bot_id: int, reason: str) -> None:
        super().__init__(f"bot {bot_id}: {reason}")
        self.bot_id = bot_id
        self.reason = reason
