"""`botvisor doctor`: one line per check, ✔ or ✖ with what to do, exit 1 if any ✖."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.services import open_registry
from tests.daemon import daemon_env, free_port
from tests.e2e.test_cli_bots import cli

pytestmark = pytest.mark.timeout(120)
CHECKS = ("configuration", "Redis", "PostgreSQL", "Bot API", "state dir", "open-files", "systemd")


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


async def test_doctor_on_a_healthy_setup_says_ok_for_every_check(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator
) -> None:
    settings = fresh_settings()
    async with open_registry(settings):  # migrated
        pass
    code, out, err = await cli(daemon_env(settings, emulator.base_url, free_port()), "doctor")
    lines = out.splitlines()
    assert code == 0, out + err
    assert lines[0].startswith("✔ configuration: valid")
    assert len(lines) == len(CHECKS) and all(line.startswith("✔ ") for line in lines), out
    for check, line in zip(CHECKS, lines, strict=True):
        assert check in line
    assert "migrations applied, 0 bot(s)" in lines[2]


async def test_doctor_names_what_is_wrong_and_what_to_do(
    fresh_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = fresh_settings()
    env = daemon_env(
        settings,
        f"http://127.0.0.1:{free_port()}",  # nothing listens
        free_port(),
        BOTVISOR_DATABASE__URL=f"postgresql://nobody@127.0.0.1:{free_port()}/x",
        BOTVISOR_REDIS__URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    code, out, _ = await cli(env, "doctor")
    lines = out.splitlines()
    assert code == 1
    assert lines[0].startswith("✔ configuration")
    assert lines[1].startswith("✖ Redis at 127.0.0.1:") and "start Redis" in lines[1]
    assert lines[2].startswith("✖ PostgreSQL at 127.0.0.1:") and "start PostgreSQL" in lines[2]
    assert lines[3].startswith("✖ Bot API at http://127.0.0.1:") and "telegram.api_base" in lines[3]


async def test_doctor_reports_a_bad_configuration_as_a_check(tmp_path: Path) -> None:
    code, out, _ = await cli(
        {"PATH": "/usr/bin:/bin", "BOTVISOR_WORKERS__COUNT": "zero"}, "doctor", cwd=tmp_path
    )
    assert code == 1
    assert out.splitlines()[0].startswith("✖ configuration: invalid configuration: workers.count")
