"""Chats and broadcasts in a worker's pieces: the chat recorder fed by real traffic, and the
broadcast sender over a real Fleet, real PostgreSQL and the Bot API emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from bots.actor.spec import BotSpec
from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.registry.bots import Registry
from supervisor.registry.broadcast_records import BroadcastRecord, BroadcastState
from supervisor.registry.broadcast_service import BroadcastService, NewBroadcast
from supervisor.registry.broadcasts import BroadcastStore
from supervisor.registry.owners import ADMIN
from supervisor.services import open_registry
from supervisor.worker.broadcaster import Broadcaster
from supervisor.worker.chat_recorder import ChatRecorder, chat_of
from supervisor.worker.fleet import Fleet
from supervisor.worker.plan import Plan
from tests.botapi import open_pools
from tests.context_helpers import TcpProxy, postgres_address, via_proxy

#: the test bot's own limit (and the emulator's), so a few hundred chats take a second
FAST = {"ratelimit": {"per_bot": {"limit": 300, "period_s": 1.0}}}


@dataclass
class Rig:
    emu: RunningEmulator
    registry: Registry
    pool: asyncpg.Pool
    fleet: Fleet
    recorder: ChatRecorder
    broadcaster: Broadcaster
    svc: BroadcastService
    bot_id: int

    async def seed(self, n: int) -> None:
        """n private chats 1..n known to the emulator and to the chats table."""
        self.emu.state.create_chats(self.bot_id, n)
        await self.pool.execute(
            "INSERT INTO chats (bot_id, chat_id) SELECT $1, g FROM generate_series(1, $2) g",
            self.bot_id,
            n,
        )

    def received(self) -> dict[int, int]:
        """chat id -> messages the emulator got for it."""
        stats = self.emu.state.chat_stats(self.bot_id) or {}
        return {int(c): s["sent"] for c, s in stats.items() if s["sent"]}

    async def run(self, text: str = "news") -> BroadcastRecord:
        """Start a broadcast, let this worker send it to the end, return its final record."""
        record = await self.svc.start(ADMIN, self.bot_id, NewBroadcast(text=text))
        return await self.run_existing(record.id)

    async def run_existing(self, broadcast_id: int) -> BroadcastRecord:
        await self.broadcaster.scan()
        async with asyncio.timeout(20):
            await self.broadcaster.wait_stopped(broadcast_id)
        return await self.svc.progress(ADMIN, self.bot_id, broadcast_id)


@asynccontextmanager
async def open_rig(settings: Settings, per_bot: str = "300/1") -> AsyncIterator[Rig]:
    async with (
        open_emulator(per_bot=per_bot) as emu,
        open_registry(settings) as registry,
        open_pools() as session,
    ):
        settings = settings.model_copy(
            update={"telegram": settings.telegram.model_copy(update={"api_base": emu.base_url})}
        )
        bot = emu.state.create_bots(1)[0]
        own = FAST if per_bot == "300/1" else {}
        await registry.add(BotToken(bot.token), username=bot.username, settings=own)
        recorder = ChatRecorder(registry.pool, lambda: settings)

        async def on_disabled(bot_id: int, reason: str) -> None:
            raise AssertionError(f"bot {bot_id} disabled: {reason}")

        fleet = Fleet(settings, session, on_disabled, chats=recorder)
        spec = BotSpec(bot.id, BotToken(bot.token), "echo", own, 1, bot.username)
        await fleet.apply(Plan(start=[spec]))
        store = BroadcastStore(registry.pool)
        broadcaster = Broadcaster(store, fleet.handles, lambda: settings)
        svc = BroadcastService(registry, settings)
        try:
            yield Rig(emu, registry, registry.pool, fleet, recorder, broadcaster, svc, bot.id)
        finally:
            await broadcaster.stop()
            await fleet.stop_all()


def test_chat_of_reads_type_name_and_blocking() -> None:
    private = {"update_id": 1, "message": {"chat": {"id": 5, "type": "private", "first_name": "Ann", "last_name": "Lee"}}}  # fmt: skip
    group = {"update_id": 2, "message": {"chat": {"id": -7, "type": "group", "title": "Team"}}}
    kicked = {
        "update_id": 3,
        "my_chat_member": {
            "chat": {"id": 5, "type": "private", "first_name": "Ann"},
            "new_chat_member": {"status": "kicked"},
        },
    }
    assert chat_of(private) == (5, "private", "Ann Lee", False)
    assert chat_of(group) == (-7, "group", "Team", False)
    assert chat_of(kicked) == (5, "private", "Ann", True)
    assert chat_of({"update_id": 4, "poll": {"id": "x"}}) is None


async def test_chats_heard_from_are_recorded_and_a_broadcast_reaches_each_once(
    fresh_settings: Callable[..., Settings],
) -> None:
    """Traffic fills `chats` (one batched write); a broadcast then reaches every chat
    exactly once with exact counts, and chats found blocked are skipped the next time."""
    async with open_rig(fresh_settings()) as rig:
        emu = rig.emu.state
        traffic = [(1001, "hi"), (1002, "yo"), (-100, "group hello"), (1001, "again")]
        emu.inject({"bot_id": rig.bot_id, "chat_id": c, "text": t} for c, t in traffic)
        async with asyncio.timeout(10):
            await emu.wait_until(lambda: emu.replied == len(traffic))
        assert len(rig.recorder) == 3  # chat 1001 twice: one pending entry
        assert await rig.recorder.flush()
        rows = await rig.pool.fetch(
            "SELECT chat_id, type, title, blocked FROM chats WHERE bot_id = $1 ORDER BY chat_id",
            rig.bot_id,
        )
        assert [tuple(r) for r in rows] == [
            (-100, "group", "Group", False),
            (1001, "private", "User", False),
            (1002, "private", "User", False),
        ]
        assert len(rig.recorder) == 0 and rig.recorder.written == 3

        await rig.seed(200)
        audience = {*range(1, 201), 1001, 1002, -100}
        blocked = {7: "blocked", 70: "blocked", 150: "deactivated", -100: "kicked"}
        for chat_id, reason in blocked.items():
            emu.block(rig.bot_id, chat_id, reason)
        before = rig.received()  # the echo replies above

        first = await rig.run("first")
        assert first.state is BroadcastState.DONE and first.remaining == 0
        counts = (first.total, first.sent, first.blocked, first.failed, first.unknown)
        assert counts == (203, 199, 4, 0, 0)
        got = {c: n - before.get(c, 0) for c, n in rig.received().items()}
        assert {c for c, n in got.items() if n} == audience - set(blocked)
        assert set(got.values()) <= {0, 1} and emu.telegram_429 == 0
        marked = await rig.pool.fetch(
            "SELECT chat_id FROM chats WHERE bot_id = $1 AND blocked ORDER BY chat_id", rig.bot_id
        )
        assert [r["chat_id"] for r in marked] == sorted(blocked)

        for chat_id in blocked:  # they would take it now: so any send to them would show
            emu.block(rig.bot_id, chat_id, "none")
        before = rig.received()
        second = await rig.run("second")
        assert (second.total, second.sent, second.blocked) == (199, 199, 0)
        after = rig.received()
        assert all(after.get(c, 0) == before.get(c, 0) for c in blocked)  # not even tried


async def test_cancel_stops_sending_and_nothing_more_goes_out(
    fresh_settings: Callable[..., Settings],
) -> None:
    # Telegram's own 30/s: 300 chats would take 10 s, the cancel lands within the first
    async with open_rig(fresh_settings(), per_bot="30/1") as rig:
        await rig.seed(300)
        emu = rig.emu.state
        record = await rig.svc.start(ADMIN, rig.bot_id, NewBroadcast(text="x"))
        await rig.broadcaster.scan()
        async with asyncio.timeout(10):
            await emu.wait_until(lambda: emu.sent >= 10)
        cancelled = await rig.svc.cancel(ADMIN, rig.bot_id, record.id)
        assert cancelled.state is BroadcastState.CANCELLED
        async with asyncio.timeout(10):
            await rig.broadcaster.wait_stopped(record.id)
        final = await rig.svc.progress(ADMIN, rig.bot_id, record.id)
        assert final.state is BroadcastState.CANCELLED and final.remaining == 0
        assert final.sent == emu.sent < 300  # every send recorded, and it stopped early
        await rig.broadcaster.scan()  # a cancelled broadcast is never picked up again
        assert rig.broadcaster.statistics()["broadcasts_sending"] == 0


async def test_chats_seen_while_postgres_is_away_are_kept_and_written_when_it_is_back(
    fresh_settings: Callable[..., Settings],
) -> None:
    settings = fresh_settings(database={"timeout_s": 1.0}, chats={"pending_max": 100})
    assert settings.database.url is not None
    url = settings.database.url.get_secret_value()
    async with open_registry(settings) as registry:
        await registry.add(BotToken("7000000001:" + "a" * 35), username="b")
        proxy = TcpProxy(postgres_address(url))
        await proxy.start()
        pool = await asyncpg.create_pool(via_proxy(url, proxy.port), min_size=0, max_size=2)
        try:
            recorder = ChatRecorder(pool, lambda: settings)
            await proxy.stop()  # PostgreSQL unreachable
            for chat_id in range(1, 151):
                recorder.observe(7000000001, {"update_id": chat_id, "message": {"chat": {"id": chat_id, "type": "private"}}})  # fmt: skip
            assert not await recorder.flush()
            assert len(recorder) == 100 and recorder.skipped == 50  # bounded; kept for a retry
            await proxy.start()
            assert await recorder.flush()
        finally:
            await pool.close()
            await proxy.stop()
        n = await registry.pool.fetchval("SELECT count(*) FROM chats WHERE bot_id = 7000000001")
    assert n == 100 and len(recorder) == 0
