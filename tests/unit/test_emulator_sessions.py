"""The emulator's logOut and close answer like Telegram's server (fake clock)."""

from __future__ import annotations

import asyncio

import orjson

from emulators.telegram.sessions import ServerSessions
from emulators.telegram.state import EmulatorState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(result: tuple[int, bytes]) -> tuple[int, dict]:
    return result[0], orjson.loads(result[1])


async def test_log_out_ends_the_poll_and_locks_the_bot_out_for_ten_minutes() -> None:
    clock = Clock()
    state = EmulatorState(clock=clock)
    sessions = ServerSessions(state)
    bot = state.create_bots(1)[0]
    assert sessions.admit(bot) is None  # launched
    poll = asyncio.create_task(state.get_updates(bot, 0, 100, 30))
    await asyncio.sleep(0)  # the poll parks
    assert answer(sessions.log_out(bot)) == (200, {"ok": True, "result": True})
    assert answer(await poll)[0] == 401
    clock.now += 599
    refused = sessions.admit(bot)
    assert refused is not None and answer(refused) == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    clock.now += 2
    assert sessions.admit(bot) is None  # back after 10 minutes


async def test_close_is_refused_in_the_first_ten_minutes_after_launch() -> None:
    clock = Clock()
    state = EmulatorState(clock=clock)
    sessions = ServerSessions(state)
    bot = state.create_bots(1)[0]
    sessions.admit(bot)
    clock.now += 60
    status, body = answer(sessions.close(bot))
    assert status == 429 and body["parameters"]["retry_after"] == 540
    clock.now += 540
    poll = asyncio.create_task(state.get_updates(bot, 0, 100, 30))
    await asyncio.sleep(0)
    assert answer(sessions.close(bot))[0] == 200
    assert answer(await poll) == (
        500,
        {"ok": False, "error_code": 500, "description": "Internal Server Error: restart"},
    )
    assert sessions.admit(bot) is None and sessions.launched_at[bot.id] == clock.now  # relaunched
