"""Answer once: the progress record, re-delivery after a restart, handler retries, and
Telegram's errors on getUpdates handled inside the poll loop (no actor restart)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bots.actor.actor import BotActor
from bots.actor.dispatch import ChatDispatcher
from bots.actor.policy import BackoffConfig
from bots.actor.progress_store import MemoryProgress
from bots.actor.spec import BotSpec, PollConfig
from bots.actor.state import ActorState
from bots.actor.stats import ActorStats
from bots.actor.supervise import BotHandle, spawn
from bots.handlers.base import BotContext
from bots.handlers.registry import make_handler
from bots.telegram.errors import BotNetworkError
from bots.telegram.sessions import SessionPool
from bots.telegram.token import BotToken
from bots.telegram.update import Incoming
from emulators.telegram.server import RunningEmulator, open_emulator
from ipc.offsets import BotProgress
from tests.botapi import worker_api


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as e:
        yield e


async def _never_disabled(bot_id: int, reason: str) -> None:
    raise AssertionError(f"bot {bot_id} disabled: {reason}")


def _handle(
    emu: RunningEmulator,
    session: SessionPool,
    token: str,
    handler: Any,
    progress: MemoryProgress | None = None,
    grace_s: float = 5.0,
) -> BotHandle:
    t = BotToken(token)
    api = worker_api(session, emu.base_url, t, retries=2)
    poll = PollConfig(1, 100, grace_s, poll_backoff_max_s=0.5)
    return BotHandle(BotActor(BotSpec(t.bot_id, t, "x", {}, 1), api, handler, poll, progress))


def test_the_progress_record_round_trips_and_rejects_garbage() -> None:
    p = BotProgress(100, frozenset({103, 101, 99}))
    assert p.encode() == b"100:101,103"  # ids below the watermark are implied by it
    assert BotProgress.decode(p.encode()) == BotProgress(100, frozenset({101, 103}))
    assert BotProgress.decode(b"42") == BotProgress(42)
    assert BotProgress.decode(None) is None
    assert BotProgress.decode(b"x:1") is None and BotProgress.decode(b"5:1,y") is None


async def test_the_dispatcher_skips_what_an_earlier_poller_answered() -> None:
    handled: list[int] = []

    async def handle(update: Incoming) -> None:
        handled.append(update.update_id)

    stats = ActorStats()
    d = ChatDispatcher(1, handle, stats)
    d.start_at(10, frozenset({12, 8}))
    raw = [
        {"update_id": i, "message": {"chat": {"id": i}, "text": "x"}} for i in (9, 10, 11, 12, 13)
    ]
    assert d.submit(raw) == 3
    assert await d.drain(5)
    assert sorted(handled) == [10, 11, 13]
    assert stats.duplicates == 2  # 9 below the watermark, 12 answered before
    assert d.watermark() == 14  # the skipped id is confirmed with the rest
    assert d.record() == BotProgress(14)


class Gate:
    """A handler that answers chat 1 at once and holds chat 2 until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.release = asyncio.Event()

    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        self.calls.append((update.chat_id, update.update_id))
        if update.chat_id == 2:
            await self.release.wait()
        await ctx.api.send_message(update.chat_id, "ok", reply_to=update.message_id)


async def test_an_update_answered_above_the_watermark_is_not_answered_again(
    emu: RunningEmulator, session: SessionPool
) -> None:
    """Chat 2's handler holds the watermark back while chat 1's update is answered; the
    actor stops (its chat-2 handler cancelled at the grace). Telegram hands out both again:
    the next actor answers chat 2 only."""
    (bot,) = emu.state.create_bots(1)
    progress = MemoryProgress()
    first = Gate()
    h1 = _handle(emu, session, bot.token, first, progress, grace_s=0.2)
    await spawn(h1, BackoffConfig(0.1, 1), _never_disabled)
    slow, fast = emu.state.inject(
        [
            {"bot_id": bot.id, "chat_id": 2, "text": "slow"},
            {"bot_id": bot.id, "chat_id": 1, "text": "fast"},
        ]
    )
    async with asyncio.timeout(10):
        await emu.state.wait_until(lambda: emu.state.replied == 1)
    await h1.stop()
    assert progress.saved[bot.id] == BotProgress(slow, frozenset({fast}))

    second = Gate()
    second.release.set()
    h2 = _handle(emu, session, bot.token, second, progress)
    await spawn(h2, BackoffConfig(0.1, 1), _never_disabled)
    async with asyncio.timeout(10):
        await emu.state.wait_until(lambda: emu.state.replied == 2)
    await h2.stop()
    assert second.calls == [(2, slow)]
    assert emu.state.duplicates == 0


class SendsThenFails:
    def __init__(self, fail_before_send: bool) -> None:
        self.calls = 0
        self.fail_before_send = fail_before_send

    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        self.calls += 1
        if self.fail_before_send and self.calls == 1:
            raise BotNetworkError(ctx.bot_id, "sendMessage", "ClientOSError")
        await ctx.api.send_message(update.chat_id, "reply", reply_to=update.message_id)
        if not self.fail_before_send:
            raise BotNetworkError(ctx.bot_id, "sendMessage", "ClientOSError")


@pytest.mark.parametrize(("fail_before_send", "calls"), [(True, 2), (False, 1)])
async def test_a_handler_is_run_again_only_while_it_has_sent_nothing(
    emu: RunningEmulator, session: SessionPool, fail_before_send: bool, calls: int
) -> None:
    (bot,) = emu.state.create_bots(1)
    handler = SendsThenFails(fail_before_send)
    h = _handle(emu, session, bot.token, handler)
    await spawn(h, BackoffConfig(0.1, 1), _never_disabled)
    emu.state.inject([{"bot_id": bot.id, "chat_id": 5, "text": "hi"}])
    async with asyncio.timeout(10):
        await emu.state.wait_until(lambda: emu.state.replied == 1)
    await h.stop()  # drains: the handler has finished, retries included
    assert handler.calls == calls
    assert emu.state.sent == 1  # one reply either way: never a second one


@pytest.mark.parametrize(("code", "retry_after"), [(502, None), (429, 1)])
async def test_telegram_errors_on_the_poll_wait_in_the_loop_without_a_restart(
    emu: RunningEmulator, session: SessionPool, code: int, retry_after: int | None
) -> None:
    (bot,) = emu.state.create_bots(1)
    h = _handle(emu, session, bot.token, make_handler("echo"))
    await spawn(h, BackoffConfig(0.1, 1), _never_disabled)
    states: list[ActorState] = []
    original = h.actor.set_state

    def record(new: ActorState, reason: str = "") -> None:
        states.append(new)
        original(new, reason)

    h.actor.set_state = record  # type: ignore[method-assign]
    await emu.state.wait_polling(bot.id)
    gets_before = emu.state.bots[bot.id].get_updates
    emu.state.start_outage(code, 1.5, retry_after)
    emu.state.inject([{"bot_id": bot.id, "chat_id": 3, "text": "during"}])
    async with asyncio.timeout(15):
        await emu.state.wait_until(lambda: emu.state.replied == 1)
    assert emu.state.outage_answers >= 1
    assert h.restarts == 0 and states == []  # never left RUNNING, never called getMe again
    assert h.actor.stats.poll_errors >= 1 and h.actor.trouble == ""
    # waited, not spun: retry_after 1 s or a backoff from 0.5 s over a 1.5 s outage
    assert emu.state.outage_answers <= 6
    assert emu.state.bots[bot.id].get_updates - gets_before <= 8
    await h.stop()


async def test_a_bot_with_a_known_username_starts_with_a_poll_not_a_getme(
    emu: RunningEmulator, session: SessionPool
) -> None:
    """5,000 bots starting in a worker make 5,000 requests fewer; a dead token is still
    disabled (401 to its first long poll) and a message that waited is answered."""
    good, dead = emu.state.create_bots(2)
    emu.state.revoke(dead.id)
    emu.state.inject([{"bot_id": good.id, "chat_id": 4, "text": "waiting"}])

    def handle(bot: Any) -> BotHandle:
        h = _handle(emu, session, bot.token, make_handler("echo"))
        spec = h.actor.spec
        h.actor.spec = BotSpec(spec.bot_id, spec.token, "echo", {}, 1, bot.username)
        return h

    running = await spawn(handle(good), BackoffConfig(0.1, 1), _never_disabled)
    assert running.actor.username == good.username
    disabled: list[tuple[int, str]] = []
    disabled_now = asyncio.Event()

    async def on_disabled(bot_id: int, reason: str) -> None:
        disabled.append((bot_id, reason))
        disabled_now.set()

    refused = await spawn(handle(dead), BackoffConfig(0.1, 1), on_disabled)
    async with asyncio.timeout(10):
        await disabled_now.wait()
        await emu.state.wait_until(lambda: emu.state.replied == 1)
    await running.stop()
    assert emu.state.get_me_total == 0
    assert [(b, "401" in reason) for b, reason in disabled] == [(dead.id, True)]
    assert refused.actor.state is ActorState.DISABLED


async def test_inbox_offers_in_any_order_are_handled_once_and_recorded_safely() -> None:
    """Stream entries (bots.inbox) may come out of order after a claim: each is handled
    once, re-offers are acknowledged or joined, and until the floor is lifted the record
    keeps the run's start watermark and every id answered above it."""
    handled: list[int] = []
    acked: list[int] = []

    async def handle(update: Incoming) -> None:
        handled.append(update.update_id)

    d = ChatDispatcher(1, handle, ActorStats())
    d.start_at(10, frozenset({11}))

    def raw(i: int) -> dict[str, Any]:
        return {"update_id": i, "message": {"chat": {"id": i}, "text": "x"}}

    assert d.offer(raw(13), lambda: acked.append(13), 0.0) == "new"
    assert d.offer(raw(13), lambda: acked.append(-13), 0.0) == "queued"  # a duplicate entry
    assert await d.drain(5)
    assert d.offer(raw(12), lambda: acked.append(12), 0.0) == "new"  # older, claimed late
    assert d.offer(raw(11), lambda: acked.append(11), 0.0) == "done"  # answered before
    assert d.offer(raw(9), lambda: acked.append(9), 0.0) == "done"  # below the watermark
    assert await d.drain(5)
    assert handled == [13, 12] and sorted(acked) == [-13, 12, 13]
    record = d.record()
    assert record is not None and record.watermark == 10
    assert {11, 12, 13} <= record.done
    assert d.offer(raw(13), lambda: None, 0.0) == "done"  # answered by this run
    d.lift_floor()
    assert d.record() == BotProgress(14)
    assert d.offer(raw(12), lambda: None, 0.0) == "done"


async def test_webhook_mode_keeps_answered_ids_for_a_window_not_forever() -> None:
    """Webhook mode never lifts the floor: answered ids are aged instead. Ids answered
    without a gap below move the floor up for good; ids above a gap that outlive the
    window are forgotten (a re-delivery that late is answered again, never dropped)."""
    handled: list[int] = []

    async def handle(update: Incoming) -> None:
        handled.append(update.update_id)

    d = ChatDispatcher(1, handle, ActorStats())
    d.start_at(100)

    def raw(i: int) -> dict[str, Any]:
        return {"update_id": i, "message": {"chat": {"id": i}, "text": "x"}}

    for i in (100, 101, 102, 104, 105):  # 103 is still on its way (Telegram retries it)
        assert d.offer(raw(i), lambda: None, 0.0) == "new"
    assert await d.drain(5)
    assert d.floor() == 103  # 100-102 answered without a gap: for good, at once
    record = d.record()
    assert record is not None and record.watermark == 103 and record.done == {104, 105}
    d.age_answered(0.0, 600)  # starts the clock
    d.age_answered(299.0, 600)  # not half a window yet: nothing moves
    d.age_answered(300.0, 600)
    assert d.floor() == 103
    assert d.offer(raw(101), lambda: None, 0.0) == "done"
    assert d.offer(raw(104), lambda: None, 0.0) == "done"  # the older generation
    record = d.record()
    assert record is not None and record.watermark == 103 and {104, 105} <= record.done
    d.age_answered(600.0, 600)  # 104 and 105 outlived the window above the gap
    assert d.offer(raw(104), lambda: None, 0.0) == "new"
    assert d.offer(raw(103), lambda: None, 0.0) == "new"  # the late one is not lost
    assert await d.drain(5)
    assert sorted(handled) == [100, 101, 102, 103, 104, 104, 105]
    d.age_answered(900.0, 600)
    assert d.floor() == 105  # the gap filled: 103 and 104 answered for good
