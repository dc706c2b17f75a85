"""Common mistakes end in one line (what, which setting, what to do) and a distinct status.

Each test runs the real `botvisor` command and checks its exit status and first line.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from config import Settings
from supervisor.exitcodes import ExitCode
from tests.daemon import daemon_env, free_port, start_daemon
from tests.e2e.test_cli_bots import cli

pytestmark = pytest.mark.timeout(180)

API = "http://127.0.0.1:9"  # never reached by these commands


def first_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[0] if err.strip() else ""


def quiet_env(settings: Settings, **extra: str) -> dict[str, str]:
    return daemon_env(settings, API, free_port(), BOTVISOR_LOG__LEVEL="WARNING", **extra)


async def test_a_role_that_does_not_exist_is_a_config_error(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    url = urlsplit(settings.database.url.get_secret_value())  # type: ignore[union-attr]
    netloc = url.netloc.replace(f"{url.username}@", "nosuchrole@", 1)
    env = quiet_env(settings, BOTVISOR_DATABASE__URL=url._replace(netloc=netloc).geturl())
    code, _, err = await cli(env, "bots", "list")
    line = first_line(err)
    assert code == ExitCode.CONFIG, err
    assert line.startswith("botvisor: PostgreSQL at "), line
    assert '"nosuchrole" does not exist' in line and "BOTVISOR_DATABASE__URL" in line
    assert "create the role" in line


async def test_an_unreachable_database_is_service_unavailable(
    settings_factory: Callable[..., Settings],
) -> None:
    url = f"postgresql://botvisor@127.0.0.1:{free_port()}/botvisor"
    env = quiet_env(settings_factory(), BOTVISOR_DATABASE__URL=url)
    code, _, err = await cli(env, "bots", "list")
    line = first_line(err)
    assert code == ExitCode.UNAVAILABLE, err
    assert "is unreachable: connection refused" in line and "BOTVISOR_DATABASE__URL" in line
    assert "start PostgreSQL" in line


async def test_debug_shows_the_traceback(settings_factory: Callable[..., Settings]) -> None:
    url = f"postgresql://botvisor@127.0.0.1:{free_port()}/botvisor"
    env = quiet_env(settings_factory(), BOTVISOR_DATABASE__URL=url)
    code, _, err = await cli(env, "--debug", "bots", "list")
    assert code == ExitCode.FAILURE and "Traceback" in err


async def test_a_redis_url_without_scheme_names_the_variable(
    settings_factory: Callable[..., Settings],
) -> None:
    env = quiet_env(settings_factory(), BOTVISOR_REDIS__URL="localhost:6379")
    code, _, err = await cli(env, "status")
    line = first_line(err)
    assert code == ExitCode.CONFIG, err
    assert line.startswith("botvisor: invalid configuration: redis.url: "), line
    assert "redis://localhost:6379" in line and "BOTVISOR_REDIS__URL" in line


async def test_a_busy_http_port_is_one_line(fresh_settings: Callable[..., Settings]) -> None:
    settings = fresh_settings()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = quiet_env(settings, BOTVISOR_HTTP__PORT=str(port))
        code, _, err = await cli(env, "run")
    line = first_line(err)
    assert code == ExitCode.ADDRESS_IN_USE, err
    assert line.startswith(f"botvisor: cannot listen on 127.0.0.1:{port}"), line
    assert "BOTVISOR_HTTP__PORT" in line and "http.port" in line


async def test_a_second_master_refuses_and_leaves_the_first_ones_pid_file(
    fresh_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = fresh_settings()
    async with start_daemon(settings, API, tmp_path) as first:
        pid_file = Path(settings.state.dir) / "master.pid"
        assert pid_file.read_text().strip() == str(first.proc.pid)
        code, _, err = await cli(quiet_env(settings), "run")
        line = first_line(err)
        assert code == ExitCode.ALREADY_RUNNING, err
        assert line.startswith("botvisor: another botvisor master already runs"), line
        assert f"pid {first.proc.pid}" in line and socket.gethostname() in line
        assert "since " in line
        assert pid_file.read_text().strip() == str(first.proc.pid)
        assert first.proc.returncode is None
    # neither master left its metrics directory behind
    assert not list(Path(settings.state.dir).glob("metrics-*"))
