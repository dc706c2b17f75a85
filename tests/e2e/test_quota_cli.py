"""`botvisor owners set-quota|show` and `botvisor audit` as a user runs them: real
subprocesses, the emulator as Telegram, the run's shared database (an owner of its own)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import orjson
import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import open_emulator
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry
from tests.daemon import daemon_env, free_port
from tests.e2e.test_cli_bots import cli

pytestmark = pytest.mark.timeout(120)


async def test_a_bots_quota_from_the_cli_refuses_the_next_bot_and_every_step_is_audited(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    name = f"carol-{secrets.token_hex(4)}"
    async with open_emulator() as emu:
        env = daemon_env(settings, emu.base_url, free_port())
        first, second = emu.state.create_bots(2)
        async with open_registry(settings) as registry:
            owner, _ = await create_owner(registry, name)
            await registry.add(BotToken(first.token), owner_id=owner.id)

        code, out, err = await cli(env, "owners", "set-quota", name, "--bots", "1")
        assert code == 0, err
        assert "1 of 1" in out and "set for this owner" in out
        code, _, err = await cli(env, "bots", "add", "--token", second.token, "--owner", name)
        assert code == 1 and "quota" in err and "1 of its 1 bots" in err

        code, out, err = await cli(env, "owners", "show", name, "--json")
        assert code == 0, err
        shown = orjson.loads(out)
        assert shown["quota"]["bots"] == 1 and shown["usage"]["bots"] == 1
        assert shown["quota"]["messages_per_day"] == 0  # the default: unlimited

        code, out, err = await cli(env, "audit", "--json", "--since", "1h")
        assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    ours = [
        (r["action"], r["target"], r["outcome"])
        for r in rows
        if r["owner_id"] == owner.id and r["source"] == "cli" and r["actor"] == "admin"
    ]
    assert ours == [("owner.set_quota", f"owner:{owner.id}", "ok")], rows
    refused = [r for r in rows if r["target"] == f"bot:{second.id}" and r["source"] == "cli"]
    assert [r["outcome"] for r in refused][-1:] == ["quota_exceeded"]
    assert first.token.split(":")[1] not in out and second.token.split(":")[1] not in out
    async with open_registry(settings) as registry:
        await registry.remove(first.id)  # the emulator's ids repeat per run
