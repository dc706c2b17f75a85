"""The Bot API emulator over real HTTP on 127.0.0.1.

No sleeps: tests await the responses themselves, or `state.wait_polling()`
(resolved when a long poll starts/ends), and flood-limit tests freeze the
emulator's arrival clock so "within one second" is exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from emulators.telegram import EmulatorBot, EmulatorControl, RunningEmulator, open_emulator
from emulators.telegram.http_io import int_param
from emulators.telegram.limits import Burst, Limit, Window

CONFLICT_POLL = {
    "ok": False,
    "error_code": 409,
    "description": "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
}
CONFLICT_WEBHOOK = {
    "ok": False,
    "error_code": 409,
    "description": "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first",
}
UNAUTHORIZED = {"ok": False, "error_code": 401, "description": "Unauthorized"}
NOT_FOUND = {"ok": False, "error_code": 404, "description": "Not Found"}

WAIT = 5.0  # bound on any single await in these tests (they finish in milliseconds)


class FrozenClock:
    """Arrival clock for the flood windows: stands still until the test moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def ctl(emu: RunningEmulator) -> AsyncIterator[EmulatorControl]:
    async with emu.control() as control:
        yield control


@pytest.fixture
def clock(emu: RunningEmulator) -> Iterator[FrozenClock]:
    frozen = FrozenClock()
    emu.state.clock = frozen
    yield frozen


async def call(
    http: aiohttp.ClientSession, emu: RunningEmulator, token: str, method: str, **params: Any
) -> tuple[int, Any]:
    async with http.post(
        f"{emu.base_url}/bot{token}/{method}",
        data=orjson.dumps(params),
        headers={"Content-Type": "application/json"},
    ) as resp:
        return resp.status, orjson.loads(await resp.read())


async def one_bot(ctl: EmulatorControl) -> EmulatorBot:
    return (await ctl.create_bots(1))[0]


async def start_poll(
    http: aiohttp.ClientSession, emu: RunningEmulator, bot: EmulatorBot, **params: Any
) -> asyncio.Task[tuple[int, Any]]:
    """Start a long poll and return once the emulator holds it pending."""
    task = asyncio.create_task(call(http, emu, bot.token, "getUpdates", **params))
    await asyncio.wait_for(emu.state.wait_polling(bot.id), WAIT)
    return task


# --------------------------------------------------------------------------- auth


async def test_get_me_ok_401_404(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    status, body = await call(http, emu, bot.token, "getMe")
    assert status == 200
    assert body == {
        "ok": True,
        "result": {
            "id": bot.id,
            "is_bot": True,
            "first_name": f"Emu {bot.id}",
            "username": bot.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        },
    }
    assert bot.id >= 7_000_000_001
    assert bot.token.startswith(f"{bot.id}:") and len(bot.token.split(":")[1]) == 35

    # well-formed but unknown -> 401; malformed -> 404; unknown method -> 404
    assert await call(http, emu, f"{bot.id}:{'A' * 35}", "getMe") == (401, UNAUTHORIZED)
    assert await call(http, emu, "123:short", "getMe") == (404, NOT_FOUND)
    assert await call(http, emu, "not-a-token", "getMe") == (404, NOT_FOUND)
    assert await call(http, emu, bot.token, "noSuchMethod") == (404, NOT_FOUND)
    # method names are case-insensitive, GET works too
    async with http.get(f"{emu.base_url}/bot{bot.token}/getme") as resp:
        assert resp.status == 200
    # anything else on the server -> 404
    async with http.get(f"{emu.base_url}/favicon.ico") as resp:
        assert resp.status == 404


async def test_revoke_gives_401_and_fails_pending_poll(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    poll = await start_poll(http, emu, bot, timeout=30)
    await ctl.revoke(bot.id)
    assert await asyncio.wait_for(poll, WAIT) == (401, UNAUTHORIZED)
    assert await call(http, emu, bot.token, "getMe") == (401, UNAUTHORIZED)
    assert await call(http, emu, bot.token, "sendMessage", chat_id=1, text="x") == (
        401,
        UNAUTHORIZED,
    )
    stats = await ctl.stats()
    assert stats["bots"][str(bot.id)]["revoked"] is True


async def test_reissued_token_kills_the_old_one(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    old = f"1234:{'a' * 35}"
    new = f"1234:{'b' * 35}"
    [bot] = await ctl.create_bots(tokens=[old])
    assert bot.id == 1234 and bot.token == old
    assert (await call(http, emu, old, "getMe"))[0] == 200
    await ctl.create_bots(tokens=[new])
    assert await call(http, emu, old, "getMe") == (401, UNAUTHORIZED)
    assert (await call(http, emu, new, "getMe"))[0] == 200


# --------------------------------------------------------------------------- getUpdates


async def test_inject_then_get_updates(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    ids = await ctl.inject(
        [
            {"bot_id": bot.id, "chat_id": 42, "text": "hello"},
            {"bot_id": bot.id, "chat_id": -100, "text": "group hi", "user_id": 7},
            {"bot_id": bot.id, "chat_id": 42, "text": "again"},
        ]
    )
    assert ids == sorted(ids) and len(set(ids)) == 3
    status, body = await call(http, emu, bot.token, "getUpdates")
    assert status == 200 and body["ok"] is True
    updates = body["result"]
    assert [u["update_id"] for u in updates] == ids
    first = updates[0]["message"]
    assert first["message_id"] == 1
    assert first["from"] == {"id": 42, "is_bot": False, "first_name": "User"}
    assert first["chat"]["id"] == 42 and first["chat"]["type"] == "private"
    assert first["text"] == "hello"
    assert abs(first["date"] - time.time()) < 60
    group = updates[1]["message"]
    assert group["chat"]["type"] == "group" and group["from"]["id"] == 7
    assert group["message_id"] == 1  # message ids count per (bot, chat)
    assert updates[2]["message"]["message_id"] == 2


async def test_offset_confirms_and_forgets(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    ids = await ctl.inject([{"bot_id": bot.id, "chat_id": 5, "text": str(i)} for i in range(5)])

    _, body = await call(http, emu, bot.token, "getUpdates", limit=2)
    assert [u["update_id"] for u in body["result"]] == ids[:2]
    # unconfirmed: the same ones again
    _, body = await call(http, emu, bot.token, "getUpdates", limit=2)
    assert [u["update_id"] for u in body["result"]] == ids[:2]
    # offset = last + 1 confirms the first two
    _, body = await call(http, emu, bot.token, "getUpdates", offset=ids[1] + 1)
    assert [u["update_id"] for u in body["result"]] == ids[2:]
    # forgotten: no offset now starts at the earliest unconfirmed
    _, body = await call(http, emu, bot.token, "getUpdates")
    assert [u["update_id"] for u in body["result"]] == ids[2:]
    _, info = await call(http, emu, bot.token, "getWebhookInfo")
    assert info["result"]["pending_update_count"] == 3
    # negative offset: keep the last one, forget the rest
    _, body = await call(http, emu, bot.token, "getUpdates", offset=-1)
    assert [u["update_id"] for u in body["result"]] == ids[4:]
    _, body = await call(http, emu, bot.token, "getUpdates", offset=ids[4] + 1, timeout=0)
    assert body == {"ok": True, "result": []}
    assert not emu.state.bots[bot.id].queue


async def test_params_from_query_and_form(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    ids = await ctl.inject([{"bot_id": bot.id, "chat_id": 5, "text": str(i)} for i in range(3)])
    url = f"{emu.base_url}/bot{bot.token}/getUpdates"
    async with http.get(url, params={"offset": str(ids[1]), "limit": "1"}) as resp:
        body = orjson.loads(await resp.read())
    assert [u["update_id"] for u in body["result"]] == [ids[1]]
    async with http.post(url, data={"offset": str(ids[2])}) as resp:
        body = orjson.loads(await resp.read())
    assert [u["update_id"] for u in body["result"]] == [ids[2]]
    send = f"{emu.base_url}/bot{bot.token}/sendMessage"
    form = {"chat_id": "5", "text": "hi", "reply_parameters": '{"message_id": 3}'}
    async with http.post(send, data=form) as resp:
        assert resp.status == 200
    assert (await ctl.sent(bot.id))[0]["reply_to"] == 3


async def test_long_poll_wakes_on_inject(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    started = time.monotonic()
    poll = await start_poll(http, emu, bot, timeout=20)
    assert not poll.done()
    assert (await ctl.totals())["polling_now"] == 1
    [uid] = await ctl.inject([{"bot_id": bot.id, "chat_id": 9, "text": "wake"}])
    status, body = await asyncio.wait_for(poll, WAIT)
    assert time.monotonic() - started < 10  # returned on inject, well before the timeout
    assert status == 200
    assert [u["update_id"] for u in body["result"]] == [uid]
    assert body["result"][0]["message"]["text"] == "wake"
    await asyncio.wait_for(emu.state.wait_polling(bot.id, polling=False), WAIT)


async def test_long_poll_times_out_with_empty_list(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    started = time.monotonic()
    assert await call(http, emu, bot.token, "getUpdates", timeout=1) == (
        200,
        {"ok": True, "result": []},
    )
    assert 0.9 <= time.monotonic() - started < 5


async def test_second_get_updates_gets_older_409(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    older = await start_poll(http, emu, bot, timeout=30)
    newer = asyncio.create_task(call(http, emu, bot.token, "getUpdates", timeout=30))
    assert await asyncio.wait_for(older, WAIT) == (409, CONFLICT_POLL)
    await asyncio.wait_for(emu.state.wait_polling(bot.id), WAIT)  # the newer one holds it
    assert not newer.done()
    [uid] = await ctl.inject([{"bot_id": bot.id, "chat_id": 1, "text": "x"}])
    status, body = await asyncio.wait_for(newer, WAIT)
    assert status == 200 and body["result"][0]["update_id"] == uid
    stats = await ctl.stats()
    assert stats["totals"]["conflicts"] == 1
    assert stats["bots"][str(bot.id)]["conflicts"] == 1
    assert stats["bots"][str(bot.id)]["get_updates"] == 2


async def test_client_disconnect_drops_pending_poll(
    emu: RunningEmulator, ctl: EmulatorControl
) -> None:
    bot = await one_bot(ctl)
    async with aiohttp.ClientSession() as session:
        poll = await start_poll(session, emu, bot, timeout=30)
        poll.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poll
    await asyncio.wait_for(emu.state.wait_polling(bot.id, polling=False), WAIT)
    assert emu.state.bots[bot.id].waiter is None
    # the next poller is not a conflict
    async with aiohttp.ClientSession() as session:
        assert (await call(session, emu, bot.token, "getUpdates"))[0] == 200
    assert (await ctl.totals())["conflicts"] == 0


async def test_webhook_blocks_get_updates(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    poll = await start_poll(http, emu, bot, timeout=30)
    status, body = await call(
        http, emu, bot.token, "setWebhook", url="https://example.org/hook", secret_token="s3"
    )
    assert status == 200 and body["result"] is True
    assert await asyncio.wait_for(poll, WAIT) == (
        409,
        {
            "ok": False,
            "error_code": 409,
            "description": "Conflict: terminated by setWebhook request",
        },
    )
    assert await call(http, emu, bot.token, "getUpdates") == (409, CONFLICT_WEBHOOK)
    await ctl.inject([{"bot_id": bot.id, "chat_id": 1, "text": "x"}])
    _, info = await call(http, emu, bot.token, "getWebhookInfo")
    assert info["result"]["url"] == "https://example.org/hook"
    assert info["result"]["has_custom_certificate"] is False
    assert info["result"]["pending_update_count"] == 1
    _, body = await call(http, emu, bot.token, "deleteWebhook", drop_pending_updates=True)
    assert body["result"] is True
    assert await call(http, emu, bot.token, "getUpdates") == (200, {"ok": True, "result": []})
    _, info = await call(http, emu, bot.token, "getWebhookInfo")
    assert info["result"]["url"] == "" and info["result"]["pending_update_count"] == 0


# --------------------------------------------------------------------------- sendMessage


async def test_send_message_result_and_bad_requests(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bot = await one_bot(ctl)
    status, body = await call(http, emu, bot.token, "sendMessage", chat_id=77, text="hi")
    assert status == 200
    msg = body["result"]
    assert msg["message_id"] == 1 and msg["text"] == "hi"
    assert msg["chat"] == {"id": 77, "type": "private"}
    assert msg["from"]["id"] == bot.id and msg["from"]["is_bot"] is True
    _, body = await call(http, emu, bot.token, "sendMessage", chat_id=-5, text="g")
    assert body["result"]["chat"]["type"] == "group"

    assert await call(http, emu, bot.token, "sendMessage", chat_id=77) == (
        400,
        {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"},
    )
    assert (await call(http, emu, bot.token, "sendMessage", chat_id=77, text=""))[0] == 400
    status, body = await call(http, emu, bot.token, "sendMessage", text="x")
    assert status == 400 and body["description"] == "Bad Request: chat_id is empty"
    status, body = await call(http, emu, bot.token, "sendMessage", chat_id="@nobody", text="x")
    assert status == 400 and body["description"] == "Bad Request: chat not found"
    assert await call(http, emu, bot.token, "sendChatAction", chat_id=77, action="typing") == (
        200,
        {"ok": True, "result": True},
    )
    assert (await ctl.totals())["sent"] == 2


async def test_bot_flood_limit_31st_in_a_second(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession, clock: FrozenClock
) -> None:
    bot = await one_bot(ctl)
    for chat in range(1, 31):  # 30 different private chats: only the bot limit applies
        status, _ = await call(http, emu, bot.token, "sendMessage", chat_id=chat, text="x")
        assert status == 200
    clock.now += 0.25
    assert await call(http, emu, bot.token, "sendMessage", chat_id=31, text="x") == (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        },
    )
    stats = await ctl.stats()
    bot_stats = stats["bots"][str(bot.id)]
    assert bot_stats["sent"] == 30 and bot_stats["telegram_429"] == 1
    assert bot_stats["max_in_1s"] == 30
    assert stats["totals"]["sent"] == 30 and stats["totals"]["telegram_429"] == 1
    assert len(await ctl.sent(bot.id)) == 30
    # the 429'd message did not take a slot: one second after the burst one more fits
    clock.now += 0.75
    assert (await call(http, emu, bot.token, "sendMessage", chat_id=31, text="x"))[0] == 200
    assert (await ctl.chat_stats(bot.id))[31] == {"sent": 1, "telegram_429": 1, "max_in_1s": 1}


async def test_private_chat_limit(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession, clock: FrozenClock
) -> None:
    bot = await one_bot(ctl)
    assert (await call(http, emu, bot.token, "sendMessage", chat_id=10, text="1"))[0] == 200
    clock.now += 0.4
    status, body = await call(http, emu, bot.token, "sendMessage", chat_id=10, text="2")
    assert status == 429
    assert body["parameters"] == {"retry_after": 1}
    assert body["description"] == "Too Many Requests: retry after 1"
    # another private chat is independent
    assert (await call(http, emu, bot.token, "sendMessage", chat_id=11, text="1"))[0] == 200
    clock.now += 0.6  # exactly 1 s after the first: the window has freed
    assert (await call(http, emu, bot.token, "sendMessage", chat_id=10, text="2"))[0] == 200
    chats = await ctl.chat_stats(bot.id)
    assert chats[10] == {"sent": 2, "telegram_429": 1, "max_in_1s": 1}


async def test_group_limit_21st_in_a_minute(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession, clock: FrozenClock
) -> None:
    bot = await one_bot(ctl)
    for i in range(20):
        status, _ = await call(http, emu, bot.token, "sendMessage", chat_id=-100, text=str(i))
        assert status == 200
        clock.now += 1.0  # stay under the per-bot limit; 20 s in total
    clock.now += 10.0  # 30 s after the first message
    status, body = await call(http, emu, bot.token, "sendMessage", chat_id=-100, text="21")
    assert status == 429
    assert body["parameters"]["retry_after"] == 30
    assert body["description"] == "Too Many Requests: retry after 30"
    clock.now += 30.0
    assert (await call(http, emu, bot.token, "sendMessage", chat_id=-100, text="21"))[0] == 200
    assert (await ctl.chat_stats(bot.id))[-100]["sent"] == 21


async def test_limits_configurable_and_off(http: aiohttp.ClientSession) -> None:
    async with open_emulator(rate_limits=False) as emu, emu.control() as ctl:
        bot = await one_bot(ctl)
        for _ in range(40):
            status, _ = await call(http, emu, bot.token, "sendMessage", chat_id=1, text="x")
            assert status == 200
    async with open_emulator(per_bot=None, per_chat="3/1", per_group=None) as emu:
        emu.state.clock = FrozenClock()
        async with emu.control() as ctl:
            bot = await one_bot(ctl)
            codes = [
                (await call(http, emu, bot.token, "sendMessage", chat_id=1, text="x"))[0]
                for _ in range(4)
            ]
            assert codes == [200, 200, 200, 429]


# --------------------------------------------------------------------------- stats


async def test_stats_lost_replied_duplicates_out_of_order(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    emu.state.limits = type(emu.state.limits).off()  # plain accounting, no flood windows
    bot = await one_bot(ctl)
    await ctl.inject(
        [{"bot_id": bot.id, "chat_id": 1, "text": f"a{i}"} for i in range(4)]  # ids 1..4
        + [{"bot_id": bot.id, "chat_id": 2, "text": "b"}]  # chat 2: id 1, never answered
    )

    async def reply(chat: int, to: int | None, style: str = "params") -> None:
        params: dict[str, Any] = {"chat_id": chat, "text": "r"}
        if to is not None and style == "params":
            params["reply_parameters"] = {"message_id": to}
        elif to is not None:
            params["reply_to_message_id"] = to
        assert (await call(http, emu, bot.token, "sendMessage", **params))[0] == 200

    await reply(1, 1)
    await reply(1, 3, style="legacy")
    await reply(1, 2)  # out of order: 2 after 3
    await reply(1, 3)  # duplicate
    await reply(1, None)  # plain message, no reference
    totals = (await ctl.stats(per_bot=False))["totals"]
    assert totals["injected"] == 5
    assert totals["replied"] == 3
    assert totals["lost"] == 2
    assert totals["duplicates"] == 1
    assert totals["out_of_order"] == 1
    assert totals["sent"] == 5
    assert totals["p50_ms"] is not None and totals["p99_ms"] >= totals["p50_ms"] >= 0
    assert "bots" not in await ctl.stats(per_bot=False)
    sent = await ctl.sent(bot.id)
    assert [s["reply_to"] for s in sent] == [1, 3, 2, 3, None]
    assert all(s["chat_id"] == 1 and s["text"] == "r" for s in sent)

    await ctl.reset_stats()
    totals = await ctl.totals()
    assert totals["injected"] == totals["replied"] == totals["sent"] == 0
    assert totals["p50_ms"] is None
    assert totals["bots"] == 1
    assert emu.state.bots[bot.id].queue  # the queue survives a stats reset


async def test_wait_until_sees_the_reply_it_was_woken_by(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    """A watcher on the reply count is woken by the reply itself, counted: no later
    long poll has to come along (with the inbox on, every bot is parked by then)."""
    bot = await one_bot(ctl)
    await ctl.inject([{"bot_id": bot.id, "chat_id": 1, "text": "hi"}])
    params = {"chat_id": 1, "text": "r", "reply_parameters": {"message_id": 1}}
    # the send starts only once this task waits, i.e. once the watcher is registered
    send = asyncio.create_task(call(http, emu, bot.token, "sendMessage", **params))
    await asyncio.wait_for(emu.state.wait_until(lambda: emu.state.replied >= 1), WAIT)
    assert (await send)[0] == 200


async def test_polling_since(
    emu: RunningEmulator, ctl: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    bots = await ctl.create_bots(3)
    t0 = await ctl.now()
    assert await ctl.polling_since(t0) == 0
    for bot in bots[:2]:
        await call(http, emu, bot.token, "getUpdates")
    assert await ctl.polling_since(t0) == 2
    stats = await ctl.stats()
    first = stats["bots"][str(bots[0].id)]
    assert first["first_poll_at"] is not None and first["last_poll_at"] >= t0
    assert stats["bots"][str(bots[2].id)]["first_poll_at"] is None


async def test_many_concurrent_long_polls(emu: RunningEmulator, ctl: EmulatorControl) -> None:
    """300 bots hold a long poll each; one bulk inject wakes them all."""
    n = 300
    bots = await ctl.create_bots(n)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        polls = [
            asyncio.create_task(call(session, emu, b.token, "getUpdates", timeout=30)) for b in bots
        ]
        await asyncio.wait_for(
            emu.state.wait_until(lambda: sum(b.polling_now for b in emu.state.bots.values()) == n),
            15,
        )
        assert (await ctl.totals())["polling_now"] == n
        await ctl.inject([{"bot_id": b.id, "chat_id": 1, "text": "go"} for b in bots])
        results = await asyncio.wait_for(asyncio.gather(*polls), 15)
    assert all(status == 200 and len(body["result"]) == 1 for status, body in results)
    assert (await ctl.totals())["conflicts"] == 0


async def test_control_errors(emu: RunningEmulator, ctl: EmulatorControl) -> None:
    from emulators.telegram import ControlError

    with pytest.raises(ControlError) as exc:
        await ctl.inject([{"bot_id": 1, "chat_id": 1, "text": "x"}])
    assert exc.value.status == 400
    with pytest.raises(ControlError):
        await ctl.revoke(42)
    with pytest.raises(ControlError):
        await ctl.create_bots(tokens=["bad"])
    with pytest.raises(ControlError):
        await ctl.sent(42)


# --------------------------------------------------------------------------- units


def test_window_and_burst() -> None:
    w = Window(Limit(2, 1.0))
    assert w.wait(0.0) <= 0
    w.record(0.0)
    w.record(0.1)
    assert w.wait(0.5) == pytest.approx(0.5)
    assert w.wait(1.0) <= 0
    b = Burst()
    for t in (0.0, 0.5, 0.9, 1.0, 1.95, 2.0):
        b.add(t)
    assert b.peak == 3  # (0.0, 0.5, 0.9) and (0.5, 0.9, 1.0)...
    assert Limit.parse("20/60") == Limit(20, 60.0)
    with pytest.raises(ValueError):
        Limit.parse("x")
    assert int_param("12", "x") == 12 and int_param(None, "x", 5) == 5
