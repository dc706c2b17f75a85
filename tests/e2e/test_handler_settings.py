"""Handler settings are checked where a bot is registered or changed: each handler's
pydantic model (bots/handlers/registry.py: SETTINGS) and what this host is configured for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from bots.handlers.registry import check_settings
from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from tests.daemon import daemon_env, free_port
from tests.e2e.test_cli_bots import cli

pytestmark = pytest.mark.timeout(120)
QUIET = {"BOTVISOR_LOG__LEVEL": "WARNING"}


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


def first_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[0]


def test_each_handler_names_unknown_keys_and_bad_values() -> None:
    assert check_settings("echo", {"ratelimit": {"per_bot": {"limit": 5}}}) == []
    assert check_settings("echo", {"greeting": "hi"}) == [
        "greeting: unknown setting; known: ratelimit, telegram"
    ]
    problems = check_settings("openai", {"temperature": 7, "max_tokens": "ten"})
    assert [p.split(":")[0] for p in problems] == ["temperature", "max_tokens"]
    assert check_settings("openai", {"temperature": 0.5, "greeting": "Hello"}) == []


async def test_openai_without_openai_configured_is_refused(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator
) -> None:
    env = daemon_env(fresh_settings(), emulator.base_url, free_port(), **QUIET)
    (bot,) = emulator.state.create_bots(1)
    code, _, err = await cli(env, "bots", "add", "--token", bot.token, "--handler", "openai")
    assert code != 0
    assert first_line(err).startswith("botvisor: handler openai: this host has no [openai]")

    code, _, err = await cli(env, "bots", "add", "--token", bot.token)
    assert code == 0, err
    code, _, err = await cli(env, "bots", "update", str(bot.id), "--handler", "openai")
    assert code != 0 and "no [openai] configured" in first_line(err)


async def test_set_keys_are_checked_against_the_handlers_model(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator
) -> None:
    env = daemon_env(
        fresh_settings(),
        emulator.base_url,
        free_port(),
        BOTVISOR_OPENAI__BASE_URL="http://x",
        **QUIET,
    )
    echo_bot, llm_bot = emulator.state.create_bots(2)
    code, _, err = await cli(env, "bots", "add", "--token", echo_bot.token, "--set", "tone=dry")
    assert code != 0
    assert first_line(err) == (
        "botvisor: settings of a echo bot: tone: unknown setting; known: ratelimit, telegram"
    )
    args = ("bots", "add", "--token", llm_bot.token, "--handler", "openai")
    code, _, err = await cli(env, *args, "--set", "temperature=5")
    assert code != 0 and "temperature: input should be less than or equal to 2" in err
    code, _, err = await cli(env, *args, "--set", "temperature=0.5", "--set", "greeting=Hi")
    assert code == 0, err
    code, _, err = await cli(env, "bots", "update", str(llm_bot.id), "--set", "max_tokens=0")
    assert code != 0 and first_line(err).startswith("botvisor: settings of a openai bot: max_")
    code, _, err = await cli(
        env, "bots", "update", str(llm_bot.id), "--set", 'ratelimit={"per_bot": {"limit": 0}}'
    )
    assert code != 0 and "ratelimit: per_bot.limit" in err
