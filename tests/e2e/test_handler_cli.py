"""`--handler` with plugin references from the command line, and `botvisor handlers`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.exitcodes import ExitCode
from supervisor.services import open_registry
from tests.daemon import daemon_env, free_port
from tests.e2e.test_cli_bots import cli

pytestmark = pytest.mark.timeout(180)
REF = "examples.support_bot:router"
#: a factory plugin that needs no aiogram: each CLI run that resolves an aiogram Router
#: pays its ~5 s import, so only one step below does
LITE = """
from pydantic import BaseModel, ConfigDict

from bots.handlers.echo import EchoHandler


class LiteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hello"


settings_model = LiteSettings


def handler(deps):
    return EchoHandler()
"""
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


async def test_plugin_references_are_checked_at_registration(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    (tmp_path / "halfdone.py").write_text("def handler(:\n")
    (tmp_path / "lite.py").write_text(LITE)
    settings = fresh_settings()
    env = daemon_env(settings, emulator.base_url, free_port())
    env["BOTVISOR_HANDLERS__PATHS"] = os.pathsep.join([str(ROOT), str(tmp_path)])
    env["BOTVISOR_LOG__LEVEL"] = "WARNING"
    good, other = emulator.state.create_bots(2)
    token_file = tmp_path / "token"
    token_file.write_text(good.token)

    add = ("bots", "add", "--token-file", str(token_file), "--handler", "lite:handler")
    code, out, err = await cli(env, *add)
    assert code == 0, err
    assert "handler lite:handler" in out

    code, _, err = await cli(env, "bots", "add", "--token", other.token, "--handler", "halfdone:r")
    assert code == ExitCode.FAILURE, err
    assert "does not import: SyntaxError" in err
    code, _, err = await cli(env, "bots", "add", "--token", other.token, "--handler", "x.y:z")
    assert code == ExitCode.FAILURE and "ModuleNotFoundError" in err

    code, _, err = await cli(env, "bots", "update", str(good.id), "--set", "greeting=5")
    assert code == ExitCode.FAILURE and "greeting: input should be a valid string" in err
    code, _, err = await cli(env, "bots", "update", str(good.id), "--set", 'greeting="Hi"')
    assert code == 0, err
    async with open_registry(settings) as registry:
        record = await registry.get(good.id)
        assert record is not None and record.handler == "lite:handler"
        assert record.settings == {"greeting": "Hi"}
        assert await registry.get(other.id) is None

    code, out, err = await cli(env, "handlers", "list")
    assert code == 0, err
    assert {"echo", "openai", "manager"} <= {line.split()[0] for line in out.splitlines() if line}
    code, out, err = await cli(env, "handlers", "check", "lite:handler")
    assert code == 0 and "a factory (deps) -> Handler" in out and "LiteSettings" in out, err
    code, out, err = await cli(env, "handlers", "check", REF)
    assert code == 0 and "aiogram router" in out and "SupportSettings" in out, err
    code, _, err = await cli(env, "handlers", "check", "halfdone:r")
    assert code == ExitCode.FAILURE and "SyntaxError" in err
