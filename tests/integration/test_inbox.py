"""The durable inbox against real Redis: no head-of-line blocking, a dead reader's entries
handled by its successor (none lost, none answered twice), Redis down -> fallback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bots.actor.actor import BotActor
from bots.actor.policy import BackoffConfig
from bots.actor.progress_store import MemoryProgress
from bots.actor.spec import BotSpec, PollConfig
from bots.actor.supervise import BotHandle, spawn
from bots.handlers.base import BotContext
from bots.telegram.sessions import SessionPool
from bots.telegram.token import BotToken
from bots.telegram.update import Incoming
from emulators.telegram.server import RunningEmulator, open_emulator
from ipc import keys
from ipc.inbox import APPEND_CHUNK, Inbox
from ipc.redis_client import redis_client
from supervisor.worker.inbox_reader import InboxReader
from tests.botapi import worker_api
from tests.context_helpers import RedisProcess

SHARDS = 4


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(rate_limits=False) as e:
        yield e


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = redis_client(redis_url, 2.0)
    yield c
    await c.aclose()


async def _never_disabled(bot_id: int, reason: str) -> None:
    raise AssertionError(f"bot {bot_id} disabled: {reason}")


class Gate:
    """Answers every chat at once except those in `hold`, which wait until released."""

    def __init__(self, hold: frozenset[int] | set[int] = frozenset()) -> None:
        self.hold = hold
        self.calls: list[tuple[int, int]] = []
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.started = asyncio.Event()

    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        self.calls.append((update.chat_id, update.update_id))
        self.started.set()
        if update.chat_id in self.hold:
            self.holding.set()
            await self.release.wait()
        await ctx.api.send_message(update.chat_id, "ok", reply_to=update.message_id)


class Worker:
    """What a worker runs for the inbox: its Inbox, ack flusher, reader and bots."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        name: str,
        claim_idle_s: float,
        timeout_s: float = 2.0,  # the client's (a worker's redis.timeout_s)
    ) -> None:
        self.inbox = Inbox(redis, prefix, SHARDS, name, timeout_s, 1000, claim_idle_s)
        self.handles: dict[int, BotHandle] = {}
        self.reader = InboxReader(self.inbox, self.handles, lambda: list(range(SHARDS)))
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.inbox.run(), name="test:acks"),
            asyncio.create_task(self.reader.run(), name="test:reader"),
        ]

    async def add(
        self,
        emu: RunningEmulator,
        session: SessionPool,
        token: str,
        handler: Any,
        progress: MemoryProgress,
    ) -> BotHandle:
        t = BotToken(token)
        api = worker_api(session, emu.base_url, t, retries=2)
        poll = PollConfig(1, 100, 0.2, poll_backoff_max_s=0.3)
        actor = BotActor(
            BotSpec(t.bot_id, t, "x", {}, 1), api, handler, poll, progress, inbox=self.inbox
        )
        handle = self.handles[t.bot_id] = BotHandle(actor)
        await spawn(handle, BackoffConfig(0.1, 1), _never_disabled)
        return handle

    async def stop(self) -> None:
        await asyncio.gather(*(h.stop() for h in self.handles.values()))
        await self.kill()

    async def kill(self) -> None:
        """Gone without a word (what SIGKILL leaves behind: pending entries)."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _stream_len(client: aioredis.Redis, prefix: str, bot_id: int) -> int:
    return int(await client.xlen(keys.inbox_key(prefix, bot_id % SHARDS)))


async def _wait_empty(client: aioredis.Redis, prefix: str, bot_id: int, worker: Worker) -> None:
    """Until every entry of the bot's shard is acknowledged and deleted."""
    await worker.inbox.wait_acked(worker.reader.offered + worker.reader.skipped)
    assert await _stream_len(client, prefix, bot_id) == 0


async def test_a_slow_chat_does_not_hold_up_another_chat_of_the_same_bot(
    emu: RunningEmulator, session: SessionPool, client: aioredis.Redis, key_prefix: str
) -> None:
    (bot,) = emu.state.create_bots(1)
    worker = Worker(client, key_prefix, "w1", 30.0)
    worker.start()
    gate = Gate(hold={2})
    await worker.add(emu, session, bot.token, gate, MemoryProgress())
    try:
        (slow,) = emu.state.inject([{"bot_id": bot.id, "chat_id": 2, "text": "slow"}])
        async with asyncio.timeout(10):
            await gate.holding.wait()
            # confirmed to Telegram while its handler runs (without the inbox it stays
            # unconfirmed and the bot stops fetching until it is handled)
            await emu.state.wait_until(lambda: not bot.queue)
        # chat 2's handler runs; chat 1's message arrives and is answered meanwhile
        (fast,) = emu.state.inject([{"bot_id": bot.id, "chat_id": 1, "text": "fast"}])
        async with asyncio.timeout(10):
            await emu.state.wait_until(lambda: emu.state.replied == 1)
        assert (1, fast) in gate.calls and not gate.release.is_set()
        # both are confirmed to Telegram although chat 2's is not handled yet
        async with asyncio.timeout(10):
            await emu.state.wait_until(lambda: not bot.queue)
        gate.release.set()
        async with asyncio.timeout(10):
            await emu.state.wait_until(lambda: emu.state.replied == 2)
            await _wait_empty(client, key_prefix, bot.id, worker)
        assert sorted(gate.calls) == [(1, fast), (2, slow)]
        assert worker.inbox.appended == 2 and worker.inbox.fallbacks == 0
    finally:
        gate.release.set()
        await worker.stop()


async def test_a_dead_readers_entries_are_handled_by_its_successor_once(
    emu: RunningEmulator, session: SessionPool, client: aioredis.Redis, key_prefix: str
) -> None:
    """Worker 1 reads four updates from the inbox, answers one (its XACK never leaves:
    killed first), holds three and dies with all four pending. Worker 2 claims them,
    skips the answered one (progress record) and answers the other three: none lost,
    none answered twice."""
    (bot,) = emu.state.create_bots(1)
    progress = MemoryProgress()
    first = Worker(client, key_prefix, "w1", 30.0)
    first.inbox.ack = lambda shard, entry_id: None  # type: ignore[method-assign]
    first.start()
    held = Gate(hold={2, 3})
    handle = await first.add(emu, session, bot.token, held, progress)
    ids = emu.state.inject(
        [{"bot_id": bot.id, "chat_id": c, "text": f"m{c}"} for c in (2, 1, 3, 2)]
    )
    async with asyncio.timeout(10):
        await emu.state.wait_until(lambda: emu.state.replied == 1 and not bot.queue)
        while len(held.calls) < 2:  # chat 2's first and chat 3's handlers are running
            await held.started.wait()
            held.started.clear()
    assert first.reader.offered == 4
    await first.kill()
    await handle.stop()  # held handlers cancelled at the grace: nothing acked
    record = progress.saved[bot.id]
    assert record.watermark <= ids[0] and record.done == frozenset({ids[1]})
    assert await _stream_len(client, key_prefix, bot.id) == 4

    second = Worker(client, key_prefix, "w2", 0.3)
    second.start()
    answers = Gate()
    await second.add(emu, session, bot.token, answers, progress)
    try:
        async with asyncio.timeout(15):
            await emu.state.wait_until(lambda: emu.state.replied == 4)
            await _wait_empty(client, key_prefix, bot.id, second)
        assert sorted(u for _, u in answers.calls) == [ids[0], ids[2], ids[3]]
        assert emu.state.duplicates == 0
        assert second.reader.skipped == 1
        # the dead reader, nothing pending any more, leaves the group (at once here, or
        # already in the claim pass that took its entries)
        await second.inbox.forget_idle_consumers([bot.id % SHARDS])
        consumers = await client.xinfo_consumers(
            keys.inbox_key(key_prefix, bot.id % SHARDS), keys.inbox_group(key_prefix)
        )
        assert [c["name"] for c in consumers] in ([b"w2"], ["w2"])
    finally:
        await second.stop()


async def test_entries_of_a_read_whose_reply_was_lost_come_first_and_once(
    emu: RunningEmulator, session: SessionPool, client: aioredis.Redis, key_prefix: str
) -> None:
    """A connection cut while XREADGROUP's reply is on its way: Redis counts the entries
    as delivered (pending for this consumer), the reader never saw them. It reads its own
    pending list before anything newer, so they are answered now (not after a 30 s claim),
    before the chat's later updates, once."""
    (bot,) = emu.state.create_bots(1)
    worker = Worker(client, key_prefix, "w1", 30.0)
    real_read = worker.inbox.read
    lost: list[int] = []
    cut = asyncio.Event()

    async def read_losing_one_reply(shards: list[int], block_ms: int) -> list[Any]:
        entries = await real_read(shards, block_ms)
        if entries and not lost:
            lost.extend(e.update["update_id"] for e in entries)
            cut.set()
            raise ConnectionError("connection reset while reading the reply")
        return entries

    worker.inbox.read = read_losing_one_reply  # type: ignore[method-assign]
    worker.start()
    gate = Gate()
    await worker.add(emu, session, bot.token, gate, MemoryProgress())
    try:
        first = emu.state.inject([{"bot_id": bot.id, "chat_id": 1, "text": "m0"}])
        async with asyncio.timeout(5):
            await cut.wait()
        later = emu.state.inject(
            [{"bot_id": bot.id, "chat_id": 1, "text": f"m{i}"} for i in range(1, 4)]
        )
        async with asyncio.timeout(10):
            await emu.state.wait_until(lambda: emu.state.replied == 4)
            await _wait_empty(client, key_prefix, bot.id, worker)
        assert lost == first
        assert [u for _, u in gate.calls] == first + later
        assert emu.state.out_of_order == 0 and emu.state.duplicates == 0
    finally:
        await worker.stop()


@pytest.fixture
async def redis_proc() -> AsyncIterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="bv-inbox-") as tmp:
        proc = RedisProcess(Path(tmp) / "redis.sock")
        await proc.start()
        try:
            yield proc
        finally:
            await proc.kill()


async def test_with_redis_down_updates_are_handled_the_old_way_and_none_is_lost(
    emu: RunningEmulator, session: SessionPool, redis_proc: RedisProcess
) -> None:
    prefix = f"t{secrets.token_hex(4)}:"
    client = redis_client(redis_proc.url, 0.5)
    worker = Worker(client, prefix, "w1", 30.0, timeout_s=0.5)
    worker.start()
    gate = Gate()
    gate.release.set()
    try:
        (bot,) = emu.state.create_bots(1)
        await worker.add(emu, session, bot.token, gate, MemoryProgress())
        emu.state.inject([{"bot_id": bot.id, "chat_id": 1, "text": "before"}])
        async with asyncio.timeout(10):
            await emu.state.wait_until(lambda: emu.state.replied == 1)
        assert worker.inbox.health() == "ok"
        await redis_proc.kill()
        emu.state.inject([{"bot_id": bot.id, "chat_id": c, "text": "down"} for c in (1, 2, 3)])
        async with asyncio.timeout(15):
            await emu.state.wait_until(lambda: emu.state.replied == 4)
        assert worker.inbox.health() == "degraded" and worker.inbox.fallbacks >= 1
        await redis_proc.start()
        emu.state.inject([{"bot_id": bot.id, "chat_id": 4, "text": "back"}])
        async with asyncio.timeout(15):
            await emu.state.wait_until(lambda: emu.state.replied == 5)
        assert worker.inbox.health() == "ok"
        assert emu.state.duplicates == 0
    finally:
        await worker.stop()
        await client.aclose()


async def test_an_append_a_frozen_redis_runs_after_the_caller_gave_up_adds_nothing(
    redis_proc: RedisProcess,
) -> None:
    """A hung Redis keeps the request and runs it when it wakes. The poller handled that
    batch itself meanwhile, so a late entry would be answered again by a later reader
    (issue 9's freeze -> SIGTERM -> thaw -> restart answered a message twice)."""
    prefix = f"t{secrets.token_hex(4)}:"
    client = redis_client(redis_proc.url, 0.5)
    inbox = Inbox(client, prefix, SHARDS, "w1", 0.5, 1000, 30.0)
    update = {"update_id": 3, "message": {"chat": {"id": 1}, "text": "three"}}
    try:
        assert await inbox.append(7, [{**update, "update_id": 2}])  # the connection is up
        assert redis_proc.proc is not None
        redis_proc.proc.send_signal(signal.SIGSTOP)
        try:
            assert not await inbox.append(7, [update])  # timed out: handled directly
            assert inbox.health() == "degraded"
        finally:
            redis_proc.proc.send_signal(signal.SIGCONT)
        fresh = redis_client(redis_proc.url, 5.0)
        try:
            await fresh.ping()  # served after whatever the frozen server had queued
            entries = await fresh.xrange(keys.inbox_key(prefix, 7 % SHARDS))
        finally:
            await fresh.aclose()
        assert [json.loads(fields[b"u"])["update_id"] for _, fields in entries] == [2]
        assert await inbox.append(7, [{**update, "update_id": 4}])
        assert inbox.health() == "ok"
    finally:
        await client.aclose()


async def test_appends_of_many_pollers_at_once_share_pipelines_on_a_small_pool(
    redis_url: str,
) -> None:
    """5,000 bots' polls returning at once each appended on a pooled connection of its
    own and waited past the timeout (a 10,000-bot burst). Appends queued in one loop turn
    go in one pipeline per APPEND_CHUNK, so a pool of 2 serves 1,200 pollers."""
    prefix = f"t{secrets.token_hex(4)}:"
    client = redis_client(redis_url, 2.0, pool_max=2)
    inbox = Inbox(client, prefix, SHARDS, "w1", 2.0, 10_000, 30.0)
    pollers = 1_200
    try:
        done = await asyncio.gather(
            *(
                inbox.append(bot, [{"update_id": 1, "message": {"text": "x"}}])
                for bot in range(pollers)
            )
        )
        assert all(done) and inbox.fallbacks == 0
        assert inbox.round_trips <= -(-pollers // APPEND_CHUNK)  # 3, not 1,200
        lengths = [await client.xlen(keys.inbox_key(prefix, s)) for s in range(SHARDS)]
        assert sum(lengths) == pollers
    finally:
        await client.delete(*(keys.inbox_key(prefix, s) for s in range(SHARDS)))
        await client.aclose()


def test_stream_keys_are_per_shard(settings_factory: Callable[..., Any]) -> None:
    assert keys.inbox_key("bv:", 7) == "bv:inbox:7"
    assert settings_factory().bots.inbox  # on by default
