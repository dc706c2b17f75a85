"""The emulator delivers webhooks like Telegram: POST with the secret header, one update
in flight per chat, at most max_connections per bot, retries with growing delays or the
answer's Retry-After, dropped after the retention period; getUpdates 409s meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from emulators.telegram import RunningEmulator, open_emulator
from emulators.telegram.webhooks import SECRET_HEADER, WebhookPolicy

WAIT = 10.0


@dataclass
class Receiver:
    """A webhook endpoint that records what arrives and answers as the test says."""

    answer: Callable[[dict[str, Any]], web.Response] | None = None
    hold: asyncio.Event | None = None
    got: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[str | None] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    chats_in_flight: set[int] = field(default_factory=set)
    overlaps: int = 0
    url: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        update = orjson.loads(await request.read())
        chat = update["message"]["chat"]["id"]
        self.secrets.append(request.headers.get(SECRET_HEADER))
        if chat in self.chats_in_flight:
            self.overlaps += 1
        self.chats_in_flight.add(chat)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.changed.set()
        try:
            if self.hold is not None:
                await self.hold.wait()
            self.got.append(update)
            return web.Response(status=200) if self.answer is None else self.answer(update)
        finally:
            self.in_flight -= 1
            self.chats_in_flight.discard(chat)
            self.changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    policy = WebhookPolicy(retry_base_s=0.05, retry_max_s=0.2, retention_s=0.5)
    async with open_emulator(rate_limits=False, webhook_policy=policy) as running:
        yield running


async def _call(emu: RunningEmulator, token: str, method: str, **params: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{emu.base_url}/bot{token}/{method}", json=params) as resp:
            body: dict[str, Any] = await resp.json()
            return body


async def test_delivery_with_secret_per_chat_order_and_max_connections(
    emu: RunningEmulator, receiver: Receiver
) -> None:
    (bot,) = emu.state.create_bots(1)
    answer = await _call(
        emu, bot.token, "setWebhook", url=receiver.url, secret_token="s3cret", max_connections=3
    )
    assert answer["ok"] is True
    info = await _call(emu, bot.token, "getWebhookInfo")
    assert info["result"]["url"] == receiver.url and info["result"]["max_connections"] == 3
    assert (await _call(emu, bot.token, "getUpdates"))["error_code"] == 409

    receiver.hold = asyncio.Event()
    emu.state.inject(
        [
            {"bot_id": bot.id, "chat_id": c, "text": f"{c}/{i}"}
            for i in range(3)
            for c in (1, 2, 3, 4, 5)
        ]
    )
    await receiver.until(lambda: receiver.in_flight == 3)  # held: max_connections reached
    receiver.hold.set()
    await receiver.until(lambda: len(receiver.got) == 15)
    assert receiver.max_in_flight == 3
    assert receiver.overlaps == 0
    assert set(receiver.secrets) == {"s3cret"}
    for chat in (1, 2, 3, 4, 5):  # each chat's updates in order
        texts = [u["message"]["text"] for u in receiver.got if u["message"]["chat"]["id"] == chat]
        assert texts == [f"{chat}/0", f"{chat}/1", f"{chat}/2"]
    await asyncio.wait_for(
        emu.server.webhooks.wait_until(lambda: not bot.queue), WAIT
    )  # delivered means confirmed


async def test_retries_growing_and_retry_after_then_delivered(
    emu: RunningEmulator, receiver: Receiver
) -> None:
    (bot,) = emu.state.create_bots(1)
    failures = {"n": 0}

    def flaky(_update: dict[str, Any]) -> web.Response:
        failures["n"] += 1
        if failures["n"] == 1:
            return web.Response(status=503, headers={"Retry-After": "0.1"})
        if failures["n"] <= 3:
            return web.Response(status=500)
        return web.Response(status=200)

    receiver.answer = flaky
    await _call(emu, bot.token, "setWebhook", url=receiver.url)
    emu.state.inject([{"bot_id": bot.id, "chat_id": 7, "text": "x"}])
    await receiver.until(lambda: failures["n"] == 4)
    stats = emu.server.webhooks.stats
    await asyncio.wait_for(emu.server.webhooks.wait_until(lambda: stats.delivered == 1), WAIT)
    assert stats.failed == 3 and stats.retry_after_honoured == 1
    assert receiver.secrets == [None] * 4  # no secret set: no header
    assert not bot.queue


async def test_dropped_after_retention_and_delete_hands_back_to_get_updates(
    emu: RunningEmulator, receiver: Receiver
) -> None:
    a, b = emu.state.create_bots(2)
    receiver.answer = lambda _u: web.Response(status=500)
    await _call(emu, a.token, "setWebhook", url=receiver.url)
    emu.state.inject([{"bot_id": a.id, "chat_id": 1, "text": "doomed"}])
    stats = emu.server.webhooks.stats
    await asyncio.wait_for(emu.server.webhooks.wait_until(lambda: stats.dropped == 1), WAIT)
    assert not a.queue

    await _call(emu, b.token, "setWebhook", url=receiver.url)
    emu.state.inject([{"bot_id": b.id, "chat_id": 2, "text": "kept"}])
    await receiver.until(lambda: len(receiver.got) >= 1)  # one failed attempt at least
    deleted = await _call(emu, b.token, "deleteWebhook")
    assert deleted["ok"] is True
    polled = await _call(emu, b.token, "getUpdates")
    assert [u["message"]["text"] for u in polled["result"]] == ["kept"]
