"""`botvisor demo --json` as `make demo` runs it: embedded services, emulator, daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.timeout(240)


async def test_demo_answers_everything_within_the_limits_and_ends_with_one_json_line(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTVISOR_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "supervisor.cli.main",
        "demo",
        "--bots",
        "60",
        "--duration",
        "6",
        "--json",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 220)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = orjson.loads(out.decode().strip().splitlines()[-1])
    assert summary["bots"] == summary["bots_running"] == 60
    assert summary["injected"] > 0 and summary["replied"] == summary["injected"]
    assert summary["lost"] == 0 and summary["telegram_429"] == 0
    assert summary["worker_restarts"] == 0 and summary["master_exit"] == 0
    assert summary["log_warnings"] == 0  # the daemon's own log stays clean
    assert {"p50_ms", "p99_ms", "duplicates"} <= summary.keys()
    assert "embedded" in err.decode()  # the log says the servers are private ones
    assert summary["verdict"].startswith("OK;") and summary["interrupted"] is False
    assert err.decode().strip().splitlines()[-1] == f"verdict: {summary['verdict']}"


async def test_ctrl_c_during_the_demo_prints_a_partial_summary_and_a_verdict(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTVISOR_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "supervisor.cli.main", "demo", "--bots", "5", "--duration", "120"),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert proc.stdout is not None
    async with asyncio.timeout(120):
        while not (line := await proc.stdout.readline()).startswith(b"t="):  # the live view
            assert line, "the demo ended before traffic started"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    lines = out.decode().strip().splitlines()
    assert proc.returncode == 130
    assert "summary (interrupted)" in lines
    assert lines[-1].startswith("verdict: OK (interrupted: partial run); ")
