"""The state dir is resolved predictably and said once; read-only commands create nothing;
`bots list` names owners; an import checks a repeated token once."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from config import Settings, load_settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.exitcodes import ExitCode
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry
from tests.daemon import daemon_env, free_port
from tests.e2e.test_cli_bots import cli

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


def bare_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTVISOR_")}
    env.pop("STATE_DIRECTORY", None)
    env.update(extra)
    return env


def test_state_dir_rules(tmp_path: Path) -> None:
    toml = tmp_path / "etc" / "botvisor.toml"
    toml.parent.mkdir()
    toml.write_text("")
    home = {"HOME": str(tmp_path / "home")}
    assert load_settings(environ=home).state.dir == tmp_path / "home/.local/state/botvisor"
    xdg = {**home, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    assert load_settings(environ=xdg).state.dir == tmp_path / "xdg/botvisor"
    assert load_settings(toml, environ=xdg).state.dir == tmp_path / "etc/.botvisor"
    systemd = {**xdg, "STATE_DIRECTORY": "/var/lib/botvisor"}
    assert load_settings(toml, environ=systemd).state.dir == Path("/var/lib/botvisor")
    toml.write_text('[state]\ndir = "data"\n')  # relative to the file
    assert load_settings(toml, environ=systemd).state.dir == tmp_path / "etc/data"


@pytest.mark.parametrize("command", [("bots", "list"), ("bots", "show", "1"), ("status",)])
async def test_read_only_commands_in_a_new_place_create_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    env = bare_env(XDG_STATE_HOME=str(tmp_path / "xdg"))
    code, out, err = await cli(env, *command, cwd=tmp_path)
    assert code == ExitCode.NO_REGISTRY, err
    first = err.splitlines()[0]
    assert first.startswith("botvisor: no ") and str(tmp_path / "xdg" / "botvisor") in first
    assert out == "" and os.listdir(tmp_path) == []  # no state dir, no .botvisor


async def test_list_names_owners_and_import_checks_a_repeated_token_once(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings()
    env = daemon_env(settings, emulator.base_url, free_port(), BOTVISOR_LOG__LEVEL="WARNING")
    a, b = emulator.state.create_bots(2)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{a.token}\n{b.token}\n{a.token}\n")
    code, out, err = await cli(env, "bots", "import", str(tokens))
    assert code == 0, err
    assert err.splitlines() == [f"botvisor: {tokens}:3: same token as line 1 (skipped)"]
    assert "imported 2 bot(s)" in out

    async with open_registry(settings) as registry:
        await create_owner(registry, "dora")
    (c,) = emulator.state.create_bots(1)
    code, _, err = await cli(env, "bots", "add", "--token", c.token, "--owner", "dora")
    assert code == 0, err
    code, out, err = await cli(env, "bots", "list")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert rows[str(c.id)][2] == "dora" and rows[str(a.id)][2] == "-"


def test_make_install_puts_botvisor_on_path(tmp_path: Path) -> None:
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        ["make", "-s", "install", f"BINDIR={tmp_path}"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    link = tmp_path / "botvisor"
    assert link.is_symlink()
    help_run = subprocess.run([str(link), "--help"], capture_output=True, text=True, timeout=60)
    assert help_run.returncode == 0 and help_run.stdout.startswith("usage: botvisor")


async def test_bots_list_on_an_empty_database_creates_no_tables(
    fresh_settings: Callable[..., Settings],
) -> None:
    import asyncpg

    settings = fresh_settings()
    env = daemon_env(settings, "http://127.0.0.1:9", free_port(), BOTVISOR_LOG__LEVEL="WARNING")
    code, _, err = await cli(env, "bots", "list")
    assert code == ExitCode.NO_REGISTRY, err
    assert err.splitlines()[0].startswith("botvisor: PostgreSQL at ") and "botvisor migrate" in err
    assert settings.database.url is not None
    conn = await asyncpg.connect(settings.database.url.get_secret_value(), timeout=10)
    try:
        assert await conn.fetchval("SELECT to_regclass('bots')", timeout=10) is None
    finally:
        await conn.close(timeout=10)
