"""`botvisor bots …` as a user runs it: a real subprocess, the emulator as Telegram."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.registry.bot_records import BotState
from supervisor.services import open_registry
from tests.daemon import daemon_env, free_port, start_daemon
from tests.leakcheck import LEAKS

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


async def cli(
    env: dict[str, str], *args: str, cwd: Path | None = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "supervisor.cli.main",
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    LEAKS.scan(err.decode(errors="replace"), "cli stderr")  # its log lines; stdout is output
    return proc.returncode, out.decode(), err.decode()


async def test_add_list_pause_remove_and_refusals(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator
) -> None:
    settings = fresh_settings()
    env = daemon_env(settings, emulator.base_url, free_port())
    good, revoked = emulator.state.create_bots(2)
    emulator.state.revoke(revoked.id)

    code, out, err = await cli(env, "bots", "add", "--token", good.token)
    assert code == 0, err
    assert f"bot {good.id}" in out and good.token not in out + err

    code, _, err = await cli(env, "bots", "add", "--token", good.token)
    assert code != 0 and "already registered" in err

    code, _, err = await cli(env, "bots", "add", "--token", revoked.token)
    assert code != 0 and "rejected" in err and revoked.token not in err

    code, _, err = await cli(env, "bots", "add", "--token", "not-a-token")
    assert code != 0 and "not a bot token" in err

    code, out, _ = await cli(env, "bots", "list", "--json")
    listed = orjson.loads(out)
    assert [b["id"] for b in listed] == [good.id]
    assert listed[0]["token"] == f"{good.id}:***"

    assert (await cli(env, "bots", "pause", str(good.id)))[0] == 0
    async with open_registry(settings) as registry:
        record = await registry.get(good.id)
        assert record is not None and record.state == BotState.PAUSED
    assert (await cli(env, "bots", "remove", str(good.id)))[0] == 0
    code, _, err = await cli(env, "bots", "remove", str(good.id))
    assert code != 0 and "not registered" in err


async def test_add_reads_the_token_from_stdin_or_a_file_never_the_command_line(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings()
    env = daemon_env(settings, emulator.base_url, free_port())
    piped, filed = emulator.state.create_bots(2)

    code, out, err = await cli(
        env, "bots", "add", "--token-file", "-", stdin=piped.token.encode() + b"\n"
    )
    assert code == 0, err
    assert f"bot {piped.id}" in out and piped.token not in out + err
    path = tmp_path / "token"
    path.write_text(filed.token + "\n")
    code, out, err = await cli(env, "bots", "add", "--token-file", str(path), "--handler", "echo")
    assert code == 0, err
    assert f"bot {filed.id}" in out
    code, _, err = await cli(env, "bots", "add", "--token-file", str(tmp_path / "missing"))
    assert code != 0 and "cannot read it" in err
    code, _, err = await cli(env, "bots", "add", "--token", "1:x", "--token-file", "-")
    assert code != 0 and "not allowed with" in err
    async with open_registry(settings, apply_migrations=False) as registry:
        assert {b.id for b in await registry.list()} == {piped.id, filed.id}


async def test_import_reports_each_bad_line_and_registers_the_rest(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings()
    env = daemon_env(settings, emulator.base_url, free_port())
    bots = emulator.state.create_bots(20)
    emulator.state.revoke(bots[0].id)
    f = tmp_path / "tokens.txt"
    f.write_text("# fleet\n" + "\n".join(b.token for b in bots) + "\ngarbage line\n\n")
    code, out, err = await cli(env, "bots", "import", str(f))
    assert code != 0  # something was skipped: say so in the status too
    assert "imported 19 bot(s)" in out and "1 rejected" in out and "1 bad line" in out
    assert f"{f}:22: not a bot token" in err
    async with open_registry(settings) as registry:
        assert len(await registry.list()) == 19


async def test_import_then_run_in_an_empty_directory_uses_embedded_servers(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """No URLs configured: the CLI and the daemon start and share private servers."""
    bots = emulator.state.create_bots(3)
    (tmp_path / "tokens.txt").write_text("\n".join(b.token for b in bots) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTVISOR_")}
    env.update(
        BOTVISOR_TELEGRAM__API_BASE=emulator.base_url,
        BOTVISOR_WORKERS__COUNT="1",
        BOTVISOR_HTTP__PORT=str(free_port()),
        BOTVISOR_LOG__FORMAT="json",
        XDG_STATE_HOME=str(tmp_path / "xdg"),
    )
    code, out, err = await cli(env, "bots", "import", "tokens.txt", cwd=tmp_path)
    assert code == 0, err
    state = tmp_path / "xdg" / "botvisor"  # no config file: $XDG_STATE_HOME/botvisor
    assert err.splitlines()[0] == (
        f"botvisor: state in {state} ($XDG_STATE_HOME, no config file); "
        "embedded PostgreSQL and Redis there (no database.url/redis.url set)"
    )
    assert '"level":"info"' not in err  # no other chatter from the private servers
    assert not (tmp_path / ".botvisor").exists()
    settings = Settings.model_validate({"state": {"dir": str(state)}, "workers": {"count": 1}})
    code, out, err = await cli(env, "bots", "list", "--json", cwd=tmp_path)
    assert sorted(b["id"] for b in orjson.loads(out)) == sorted(b.id for b in bots)
    # pytest's 0700 temp dirs keep `nobody` out: the warning says so, as designed
    async with start_daemon(
        settings,
        emulator.base_url,
        tmp_path,
        expect_warnings=("embedded postgres: nobody cannot reach*",),
    ) as d:
        emulator.state.inject([{"bot_id": b.id, "chat_id": 1, "text": "hi"} for b in bots])
        async with asyncio.timeout(30):
            await emulator.state.wait_until(
                lambda: emulator.state.stats(False)["totals"]["replied"] == len(bots)
            )
        status = await d.status()
    assert status["bots_by_state"]["active"] == len(bots)
