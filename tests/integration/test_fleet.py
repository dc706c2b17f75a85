"""A worker's Fleet: per-bot settings are validated per bot, and a bad one stays local."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bots.actor.spec import BotSpec
from bots.actor.state import ActorState
from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import open_emulator
from supervisor.worker.fleet import BadBotSettings, Fleet, limits_for
from supervisor.worker.plan import Plan
from tests.botapi import open_pools


def test_a_bot_may_raise_its_own_limits_and_keeps_the_rest(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    limits = limits_for(settings, {"ratelimit": {"per_bot": {"limit": 1000}}})
    assert (limits.per_bot.limit, limits.per_bot.period_s) == (1000, 1.0)
    assert limits.per_chat.limit == settings.ratelimit.per_chat.limit
    assert limits_for(settings, {}).per_bot.limit == settings.ratelimit.per_bot.limit


@pytest.mark.parametrize(
    ("own", "named"),
    [
        ({"per_bot": {"limit": 0}}, "per_bot.limit"),
        ({"per_chat": {"period_s": "soon"}}, "per_chat.period_s"),
        ({"per_bots": {"limit": 5}}, "per_bots"),
        ("fast", "expected an object"),
    ],
)
def test_bad_per_bot_limits_name_the_key(
    settings_factory: Callable[..., Settings], own: object, named: str
) -> None:
    with pytest.raises(BadBotSettings, match=named):
        limits_for(settings_factory(), {"ratelimit": own})


async def test_a_bot_with_bad_settings_is_disabled_and_the_others_start(
    settings_factory: Callable[..., Settings],
) -> None:
    disabled: dict[int, str] = {}

    async def on_disabled(bot_id: int, reason: str) -> None:
        disabled[bot_id] = reason

    async with open_emulator() as emu, open_pools() as session:
        good, bad = emu.state.create_bots(2)
        settings = settings_factory(telegram={"api_base": emu.base_url, "poll_timeout_s": 1})
        fleet = Fleet(settings, session, on_disabled)
        specs = [
            BotSpec(good.id, BotToken(good.token), "echo", {}, 1),
            BotSpec(
                bad.id, BotToken(bad.token), "echo", {"ratelimit": {"per_bot": {"limit": -1}}}, 1
            ),
        ]
        await fleet.apply(Plan(start=specs))
        try:
            assert fleet.handles[good.id].state is ActorState.RUNNING
            assert bad.id not in fleet.handles
            assert "settings.ratelimit: per_bot.limit" in disabled[bad.id]
        finally:
            await fleet.stop_all()
