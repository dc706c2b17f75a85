"""`bots move-api`: cloud -> local with logOut, local -> cloud with close, against two
emulators (one plays api.telegram.org, one a `telegram-bot-api --local`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bots.telegram.sessions import open_bot_api_session
from bots.telegram.token import BotToken
from config import Settings
from config.bot_settings import telegram_for
from emulators.telegram.server import open_emulator
from supervisor.cli.move_api import move_api
from supervisor.registry.bot_records import BotState
from supervisor.registry.bot_service import BotService
from supervisor.registry.bot_service_errors import BotServiceError
from supervisor.services import open_registry

KEPT = {"ratelimit": {"per_bot": {"limit": 1000}}}


async def test_a_bot_moves_to_a_local_server_and_back(
    fresh_settings: Callable[..., Settings],
) -> None:
    async with open_emulator() as cloud, open_emulator() as local:
        bot = cloud.state.create_bots(1)[0]
        local.state.add_token(bot.token)
        settings = fresh_settings(telegram={"api_base": cloud.base_url})
        said: list[str] = []
        async with open_registry(settings) as registry, open_bot_api_session(settings) as http:
            svc = BotService(registry, settings, http)
            await registry.add(BotToken(bot.token), handler="echo", settings=KEPT)

            await move_api(settings, svc, registry, http, bot.id, local.base_url + "/", said.append)
            record = await registry.get(bot.id)
            assert record is not None and record.state == BotState.ACTIVE
            assert dict(record.settings) == {
                **KEPT,
                "telegram": {"api_base": local.base_url},
            }
            assert telegram_for(settings, record.settings).api_base == local.base_url
            assert cloud.server.sessions.log_outs == 1 and local.server.sessions.closes == 0
            assert said[0] == f"bot {bot.id}: logOut at {cloud.base_url}: done"

            # back: Telegram refuses close in the first 10 minutes after the launch
            local.server.sessions.admit(local.state.bots[bot.id])  # launched there now
            with pytest.raises(BotServiceError, match="close at .* refused: 429"):
                await move_api(settings, svc, registry, http, bot.id, cloud.base_url, said.append)
            record = await registry.get(bot.id)
            assert record is not None and record.state == BotState.ACTIVE  # left as it was
            assert dict(record.settings)["telegram"] == {"api_base": local.base_url}

            local.server.sessions.close_after_launch_s = 0  # ten minutes later
            await move_api(settings, svc, registry, http, bot.id, cloud.base_url, said.append)
            record = await registry.get(bot.id)
            assert record is not None and dict(record.settings) == KEPT
            assert local.server.sessions.closes == 1 and cloud.server.sessions.log_outs == 1


async def test_a_stale_actors_disable_does_not_undo_a_change_made_since(
    fresh_settings: Callable[..., Settings],
) -> None:
    settings = fresh_settings()
    token = BotToken("9001:" + "B" * 35)
    async with open_registry(settings) as registry:
        await registry.add(token, handler="echo")
        running = await registry.get(token.bot_id)  # the revision a worker runs
        assert running is not None
        await registry.set_state(token.bot_id, BotState.PAUSED)  # e.g. move-api's pause
        # the old poll's 401 after logOut, reported by the worker for the revision it ran
        assert not await registry.set_state(
            token.bot_id, BotState.DISABLED, "401 Unauthorized", if_revision=running.revision
        )
        record = await registry.get(token.bot_id)
        assert record is not None and record.state == BotState.PAUSED
        assert await registry.set_state(
            token.bot_id, BotState.DISABLED, "401", if_revision=record.revision
        )
