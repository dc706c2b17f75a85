"""A bot disabled for a revoked token gets a new one (CLI, admin API, manager bot):
checked with getMe, re-encrypted; owner, handler and settings stay; it polls again."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import RunningEmulator
from supervisor.registry.bot_records import BotState
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry
from tests.daemon import daemon_env, free_port
from tests.e2e.admin_rig import Api
from tests.e2e.test_cli_bots import cli
from tests.e2e.test_daemon_e2e import is_disabled
from tests.e2e.test_manager_bot import ALICE, open_fleet, wait_polling

pytestmark = pytest.mark.timeout(120)


def reissue(emu: RunningEmulator, bot_id: int) -> str:
    """@BotFather's /revoke: a new token for the same bot; the old one stops working."""
    token = f"{bot_id}:{secrets.token_urlsafe(27)[:35]}"
    emu.state.add_token(token)
    return token


async def test_cli_replace_token_keeps_owner_and_settings_and_reactivates(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings()
    (bot,) = emulator.state.create_bots(1)
    async with open_registry(settings) as registry:
        owner, _ = await create_owner(registry, "carol")
        await registry.add(
            BotToken(bot.token), handler="echo", settings={"note": "kept"}, owner_id=owner.id
        )
        await registry.set_state(bot.id, BotState.DISABLED, "401 Unauthorized")
    old = bot.token
    new = reissue(emulator, bot.id)  # (bot.token is the new one from here on)
    env = daemon_env(settings, emulator.base_url, free_port())
    token_file = tmp_path / "token"

    token_file.write_text(old + "\n")  # the old, revoked one
    code, _, err = await cli(
        env, "bots", "replace-token", str(bot.id), "--token-file", str(token_file)
    )
    assert code != 0 and err.startswith("botvisor: token: Telegram rejected"), err
    other = emulator.state.create_bots(1)[0]
    token_file.write_text(other.token)
    code, _, err = await cli(
        env, "bots", "replace-token", str(bot.id), "--token-file", str(token_file)
    )
    assert code != 0 and f"belongs to bot {other.id}, not bot {bot.id}" in err

    token_file.write_text(new + "\n")
    code, out, err = await cli(
        env, "bots", "replace-token", str(bot.id), "--token-file", str(token_file)
    )
    assert code == 0, err
    assert out.splitlines()[0] == f"bot {bot.id} (@{bot.username}): token replaced, active"
    assert new not in out + err
    async with open_registry(settings) as registry:
        record = await registry.get(bot.id)
        specs = await registry.desired(range(settings.workers.shards), settings.workers.shards)
    assert record is not None and record.state == BotState.ACTIVE
    assert record.disabled_reason is None
    assert (record.owner_id, record.handler, dict(record.settings)) == (
        owner.id,
        "echo",
        {"note": "kept"},
    )
    assert specs[bot.id].token == BotToken(new)


async def test_api_put_token_replaces_it_for_the_owner_only(api: Api) -> None:
    kept = {"ratelimit": {"per_bot": {"limit": 5}}}
    bot = await api.register(api.alice, settings=kept)
    new = reissue(api.emulator, bot["id"])
    path = f"/v1/bots/{bot['id']}/token"
    status, data = await api.call("PUT", path, api.bob, {"token": new})
    assert status == 404, data
    status, data = await api.call("PUT", path, api.alice, {"token": "nope"})
    assert status == 422, data
    status, data = await api.call("PUT", path, api.alice, {"token": new})
    assert status == 200, data
    assert data["settings"] == kept and data["owner_id"] == api.alice_id
    assert data["revision"] == bot["revision"] + 1 and data["token"] == f"{bot['id']}:***"


async def test_manager_bot_newtoken_brings_a_revoked_bot_back(
    fresh_settings: Callable[..., Settings],
    emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    async with open_fleet(fresh_settings, emulator, tmp_path) as fleet:
        alice = fleet.chat(ALICE)
        await alice.say(f"/login {fleet.keys['alice']}")
        bot_id, token = fleet.new_token()
        assert "Added" in await alice.say(f"/addbot {token}")
        await wait_polling(fleet, bot_id, True)
        new = reissue(emulator, bot_id)
        fleet.secrets.append(new.split(":", 1)[1])
        async with (
            asyncio.timeout(15),
            open_registry(fleet.settings, apply_migrations=False) as reg,
        ):
            while not is_disabled(await reg.get(bot_id)):  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # the worker's verdict lands in the registry
        reply = await alice.say(f"/newtoken {new}")
        assert reply.startswith(
            f"New token stored for @emu{bot_id}_bot ({bot_id}); it is active"
        ), reply
        await wait_polling(fleet, bot_id, True)
