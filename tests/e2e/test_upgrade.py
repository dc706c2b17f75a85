"""Rolling code upgrade on a real daemon: `botvisor upgrade` under continuous traffic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import RunningEmulator
from supervisor.services import open_registry
from tests.daemon import Daemon, daemon_env, start_daemon
from tests.e2e.admin_rig import ADMIN_KEY, Api, error_of
from tests.e2e.test_cli_bots import cli
from tests.e2e.test_daemon_e2e import wait_replied

pytestmark = pytest.mark.timeout(180)

#: a handler module of the user's own: a factory `(deps) -> Handler` (no aiogram import,
#: so a worker boots in a second; an aiogram Router goes through the same plugin loader)
HANDLER = """\
class Echo:
    async def handle(self, update, ctx):
        if update.text is not None:
            text = "{version}:" + update.text
            await ctx.api.send_message(update.chat_id, text, reply_to=update.message_id)


def factory(deps):
    return Echo()
"""


async def _traffic(emulator: RunningEmulator, bots: list[Any], sent: list[int]) -> None:
    """A message a bot every 100 ms, each message in a chat of its own (no per-chat waits)."""
    chat = 1
    while True:
        emulator.state.inject([{"bot_id": b.id, "chat_id": chat, "text": f"m{chat}"} for b in bots])
        sent[0] += len(bots)
        chat += 1
        await asyncio.sleep(0.1)  # the traffic's own pace, not a synchronisation


async def _readiness(daemon: Daemon, seen: list[tuple[int, str]]) -> None:
    while True:
        code, body = await daemon.get("/readyz")
        seen.append((code, body["reason"]))
        await asyncio.sleep(0.05)  # sampling another process's view


async def _admin(daemon: Daemon, method: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with daemon.session.request(method, daemon.http + "/v1/upgrade", headers=headers) as r:
        return r.status, await r.json()


async def test_upgrade_under_traffic_loses_nothing_polls_once_and_runs_the_new_handler(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    module = code_dir / "upgbot.py"
    module.write_text(HANDLER.format(version="v1"))
    settings = fresh_settings(workers={"count": 2}, security={"admin_key": ADMIN_KEY})
    async with emulator.control() as ctl:
        bots = await ctl.create_bots(6)
    async with open_registry(settings) as registry:
        await registry.add_many(
            [(BotToken(b.token), f"bot{b.id}") for b in bots], handler="upgbot:factory"
        )
    paths = str(code_dir)
    async with start_daemon(
        settings, emulator.base_url, tmp_path, BOTVISOR_HANDLERS__PATHS=paths
    ) as daemon:
        before = {w["index"]: w["pid"] for w in (await daemon.status())["workers"]}
        status, idle = await _admin(daemon, "GET")
        assert status == 200 and idle["phase"] == "idle" and idle["id"] == 0
        # new code on disk (another length: a .pyc of the same size and second would pass)
        module.write_text(HANDLER.format(version="version2"))
        sent, seen = [0], list[tuple[int, str]]()
        async with asyncio.TaskGroup() as tg:
            traffic = tg.create_task(_traffic(emulator, bots, sent))
            watch = tg.create_task(_readiness(daemon, seen))
            env = daemon_env(settings, emulator.base_url, 0, BOTVISOR_HANDLERS__PATHS=paths)
            upgrade = tg.create_task(cli(env, "upgrade", "--json"))
            async with asyncio.timeout(30):  # a second request while it runs: 409, progress
                while (running := await _admin(daemon, "GET"))[1]["phase"] == "idle":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # another process's state
            status, conflict = await _admin(daemon, "POST")
            code, out, err = await upgrade
            traffic.cancel()
            watch.cancel()
        assert code == 0, err
        final = orjson.loads(out)
        assert final["phase"] == "done" and final["workers_replaced"] == 2, final
        assert final["requested_by"] == "botvisor upgrade" and final["error"] is None
        assert running[0] == 200
        assert status == 409 and conflict["error"]["code"] == "upgrade_running"
        assert conflict["upgrade"]["id"] == final["id"] == 1
        # the host never looked dead: 200 throughout, saying it upgrades
        assert [s for s in seen if s[0] != 200] == []
        assert any(reason.startswith("upgrading: worker") for _, reason in seen)

        after = await daemon.wait_status(lambda s: s["ready"])
        assert sum(w["bots_running"] for w in after["workers"]) == len(bots)
        pids = {w["index"]: w["pid"] for w in after["workers"]}
        assert pids.keys() == before.keys() and not set(pids.values()) & set(before.values())
        emulator.state.inject([{"bot_id": b.id, "chat_id": 10**6, "text": "last"} for b in bots])
        totals = await wait_replied(emulator, sent[0] + len(bots), 30)
        replies = [
            m["text"]
            for b in bots
            for m in emulator.state.sent_log(b.id) or []
            if m["chat_id"] == 10**6
        ]
        log = daemon.log_text()
    assert totals["lost"] == 0
    assert totals["duplicates"] == 0
    assert totals["conflicts"] == 0
    assert replies == ["version2:last"] * len(bots)
    assert log.count("upgrade.worker_replaced") == 2
    assert "worker.died" not in log


async def test_the_upgrade_api_is_admin_only_and_refuses_a_second_upgrade_with_progress(
    api: Api,
) -> None:
    """In-process app over a Master whose loop does not run: the request is taken, the
    upgrade stays `waiting`, so the second one meets it."""
    assert (await api.call("POST", "/v1/upgrade", None))[0] == 401
    status, data = await api.call("POST", "/v1/upgrade", api.alice)
    assert status == 403 and error_of(data)[0] == "admin_only"
    assert (await api.call("GET", "/v1/upgrade", api.alice))[0] == 403
    status, idle = await api.call("GET", "/v1/upgrade", ADMIN_KEY)
    assert status == 200 and idle["phase"] == "idle" and idle["summary"] == "no upgrade has run"
    status, started = await api.call("POST", "/v1/upgrade", ADMIN_KEY)
    assert status == 202 and started["phase"] == "waiting" and started["id"] == 1
    assert started["requested_by"] == "api" and started["started"] and not started["finished"]
    status, conflict = await api.call("POST", "/v1/upgrade", ADMIN_KEY)
    assert status == 409 and conflict["error"]["code"] == "upgrade_running"
    assert conflict["upgrade"]["id"] == 1 and conflict["upgrade"]["phase"] == "waiting"
    status, now = await api.call("GET", "/v1/upgrade", ADMIN_KEY)
    assert status == 200 and now == started


async def test_botvisor_upgrade_without_a_daemon_says_so(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator
) -> None:
    env = daemon_env(fresh_settings(), emulator.base_url, 0)
    code, out, err = await cli(env, "upgrade")
    assert code == 1 and out == ""
    assert "no daemon answered (is `botvisor run` running with this configuration?)" in err
