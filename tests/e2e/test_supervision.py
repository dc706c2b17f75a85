"""The master as a supervisor: hung workers, restart intensity, reload."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.exitcodes import ExitCode
from supervisor.services import open_registry
from tests.daemon import daemon_env, start_daemon
from tests.e2e.test_daemon_e2e import register, wait_replied

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


async def test_a_hung_worker_is_killed_and_replaced(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(workers={"count": 1, "heartbeat_timeout_s": 2})
    bots = await register(settings, emulator, 3)
    async with start_daemon(
        settings,
        emulator.base_url,
        tmp_path,
        expect_warnings=("worker.hung", "worker.kill", "worker.died"),
    ) as daemon:
        old_pid = (await daemon.status())["workers"][0]["pid"]
        os.kill(old_pid, signal.SIGSTOP)  # alive, but its loop writes no heartbeat
        status = await daemon.wait_status(
            lambda s: s["workers"][0]["pid"] not in (None, old_pid) and s["ready"], timeout=60
        )
        assert status["worker_restarts"] == 1
        emulator.state.inject([{"bot_id": b.id, "chat_id": 1, "text": "x"} for b in bots])
        await wait_replied(emulator, len(bots), 30)
        log = daemon.log_text()
    assert "worker.hung" in log
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)


async def test_workers_dying_too_often_halt_the_master_with_a_nonzero_status(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(workers={"count": 1, "restart_max": 1, "restart_within_s": 60})
    await register(settings, emulator, 1)
    async with start_daemon(
        settings, emulator.base_url, tmp_path, expect_warnings=("worker.died", "master.halt")
    ) as daemon:
        for restarts in (1, 2):
            pid = (await daemon.status())["workers"][0]["pid"]
            os.kill(pid, signal.SIGKILL)
            if restarts == 1:
                await daemon.wait_status(
                    lambda s, pid=pid: s["workers"][0]["pid"] not in (None, pid) and s["ready"]
                )
        async with asyncio.timeout(60):
            code = await daemon.proc.wait()
        log = daemon.log_text()
    assert code == ExitCode.RESTART_INTENSITY
    assert "master.halt" in log


async def test_reload_applies_a_good_config_and_keeps_running_on_a_bad_one(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(workers={"count": 1})
    bots = await register(settings, emulator, 2)
    config = tmp_path / "botvisor.toml"
    config.write_text('[log]\nlevel = "INFO"\n')
    async with start_daemon(
        settings,
        emulator.base_url,
        tmp_path,
        expect_warnings=("master.reload_rejected",),
        BOTVISOR_CONFIG=str(config),
        BOTVISOR_LOG__LEVEL="",
    ) as daemon:
        config.write_text("[log]\nlevel = 'LOUD'\n")
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.notify.wait_for("RELOADING=1", 30)
        await daemon.notify.wait_for("READY=1", 30)
        assert daemon.proc.returncode is None
        config.write_text('[log]\nlevel = "WARNING"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.notify.wait_for("RELOADING=1", 30)
        await daemon.notify.wait_for("READY=1", 30)
        emulator.state.inject([{"bot_id": b.id, "chat_id": 1, "text": "x"} for b in bots])
        await wait_replied(emulator, len(bots), 30)
        code = await daemon.stop()
        log = daemon.log_text()
    assert code == 0
    assert "master.reload_rejected" in log and "log.level" in log
    assert "master.reloaded" in log
    # after the reload to WARNING, info lines such as the drain's are gone
    assert "master.draining" not in log.split("master.reloaded", 1)[1]


async def test_worker_count_2_to_3_to_2_under_load_never_polls_twice_nor_loses(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(workers={"count": 2})
    bots = await register(settings, emulator, 60)
    config = tmp_path / "botvisor.toml"
    config.write_text("[workers]\ncount = 2\n")
    injected = 0
    chat = iter(range(1, 10**9))

    def inject_round() -> None:
        nonlocal injected
        emulator.state.inject([{"bot_id": b.id, "chat_id": next(chat), "text": "x"} for b in bots])
        injected += len(bots)

    async with start_daemon(
        settings,
        emulator.base_url,
        tmp_path,
        BOTVISOR_CONFIG=str(config),
        BOTVISOR_WORKERS__COUNT="",
    ) as daemon:
        for count in (3, 2):
            inject_round()
            config.write_text(f"[workers]\ncount = {count}\n")
            daemon.proc.send_signal(signal.SIGHUP)
            inject_round()
            status = await daemon.wait_status(
                lambda s, n=count: len(s["workers"]) == n and s["ready"], timeout=60
            )
            inject_round()
            assert sum(w["bots_running"] for w in status["workers"]) == len(bots)
            shards = sorted(s for w in status["workers"] for s in w["shards"])
            assert shards == list(range(settings.workers.shards))
        totals = await wait_replied(emulator, injected, 60)
        log = daemon.log_text()
    assert totals["conflicts"] == 0
    assert totals["lost"] == 0
    assert log.count("master.rebalanced") == 2


async def test_cli_status_and_reload_reach_the_daemon_over_redis(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    from tests.e2e.test_cli_bots import cli

    settings = fresh_settings(workers={"count": 2})
    await register(settings, emulator, 4)
    config = tmp_path / "botvisor.toml"
    config.write_text('[log]\nlevel = "INFO"\n')
    async with start_daemon(
        settings, emulator.base_url, tmp_path, BOTVISOR_CONFIG=str(config), BOTVISOR_LOG__LEVEL=""
    ) as daemon:
        env = daemon_env(settings, emulator.base_url, 0, BOTVISOR_LOG__LEVEL="")
        code, out, err = await cli(env, "status", "--json")
        assert code == 0, err
        data = orjson.loads(out)
        assert data["master"]["ready"] is True
        assert [w["index"] for w in data["workers"]] == [0, 1]
        assert sum(w["bots"]["running"] for w in data["workers"]) == 4
        code, out, _ = await cli(env, "status")
        assert "WORKER" in out and "ready: True" in out
        code, out, err = await cli(env, "--config", str(config), "reload")
        assert code == 0, err
        await daemon.notify.wait_for("RELOADING=1", 30)
        await daemon.notify.wait_for("READY=1", 30)
    assert "master.reloaded" in daemon.log_text()


async def test_a_lost_hint_delays_a_new_bot_by_at_most_the_reconcile_interval(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(workers={"count": 1, "reconcile_interval_s": 1.0})
    await register(settings, emulator, 1)
    async with start_daemon(settings, emulator.base_url, tmp_path):
        # register straight into the database and publish no hint: the hint is "lost"
        (late,) = emulator.state.create_bots(1)
        async with open_registry(settings) as registry:
            await registry.add_many([(BotToken(late.token), "late")])
        added = emulator.state.clock()
        async with asyncio.timeout(10):
            await emulator.state.wait_polling(late.id)
        delay = emulator.state.clock() - added
    print(f"bot polling {delay:.3f}s after registration without a hint")
    assert delay <= 1.0 + 1.0  # one interval, plus a DB read and getMe on a busy machine
