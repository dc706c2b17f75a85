"""Configuration: TOML + environment, and errors that name the key and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config import ConfigError, load_settings


def test_defaults_match_the_design() -> None:
    s = load_settings(environ={})
    assert s.telegram.api_base == "https://api.telegram.org"
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert s.workers.shards == 64
    assert (s.ratelimit.per_bot.limit, s.ratelimit.per_bot.period_s) == (30, 1.0)
    assert (s.ratelimit.per_group.limit, s.ratelimit.per_group.period_s) == (20, 60.0)
    assert s.context.dialog_ttl_s == 7200


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    f = tmp_path / "b.toml"
    f.write_text('[workers]\ncount = 3\n[redis]\nprefix = "x:"\n')
    s = load_settings(
        f, environ={"BOTVISOR_WORKERS__COUNT": "4", "BOTVISOR_RATELIMIT__PER_BOT__LIMIT": "1000"}
    )
    assert s.workers.count == 4
    assert s.redis.prefix == "x:"
    assert (s.ratelimit.per_bot.limit, s.ratelimit.per_bot.period_s) == (1000, 1.0)


def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path: Path) -> None:
    f = tmp_path / "b.toml"
    f.write_text("[workers]\ncuont = 3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(f, environ={})
    text = str(err.value)
    assert "workers.cuont: unknown key" in text and "count" in text and str(f) in text


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"BOTVISOR_TELEGRAM__POLL_TIMEOUT_S": "90"})
    assert "telegram.poll_timeout_s" in str(err.value)
    assert "BOTVISOR_TELEGRAM__POLL_TIMEOUT_S" in str(err.value)
    assert "50" in str(err.value)


def test_unknown_environment_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(environ={"BOTVISOR_NOPE__X": "1"})


def test_secrets_never_print() -> None:
    s = load_settings(environ={"BOTVISOR_DATABASE__URL": "postgresql://u:hunter2@h/db"})
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.database)


def test_cli_exits_78_on_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nport = 99999\n")
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", "--config", str(bad), "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 78
    assert "http.port" in proc.stderr


def test_every_command_has_help() -> None:
    for cmd in (
        ["--help"],
        ["run", "--help"],
        ["demo", "--help"],
        ["bots", "add", "--help"],
        ["bots", "import", "--help"],
        ["status", "--help"],
        ["emulator", "--help"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "supervisor.cli.main", *cmd],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, (cmd, proc.stderr)
        assert "usage: botvisor" in proc.stdout
