"""aiogram Routers run by the daemon: the support bot's FSM form across a worker SIGKILL,
callback queries, and a handler module that does not import (its bots disabled with the
reason, the others running)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.registry.bot_records import BotState
from supervisor.services import open_registry
from tests.daemon import start_daemon

pytestmark = pytest.mark.timeout(240)

REF = "examples.support_bot:router"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


async def _sent(emu: RunningEmulator, bot_id: int, needle: str, n: int = 1) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [s for s in emu.state.sent_log(bot_id) or () if needle in s["text"]]

    async with asyncio.timeout(60):
        await emu.state.wait_until(lambda: len(found()) >= n)
    return found()[n - 1]


async def test_a_form_survives_a_worker_kill_and_a_broken_module_disables_only_its_bots(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "brokenbot.py").write_text("import no_such_dependency_xyz\nrouter = None\n")
    settings = fresh_settings(workers={"count": 1})
    support, broken, echo = emulator.state.create_bots(3)
    async with open_registry(settings) as registry:
        await registry.add(BotToken(support.token), username=support.username, handler=REF)
        # registered while it imported; it broke later (registration refuses it now)
        await registry.add(
            BotToken(broken.token), username=broken.username, handler="brokenbot:router"
        )
        await registry.add(BotToken(echo.token), username=echo.username)
    paths = os.pathsep.join([str(ROOT), str(plugins)])
    async with start_daemon(
        settings,
        emulator.base_url,
        tmp_path,
        expect_warnings=("worker.died",),
        BOTVISOR_HANDLERS__PATHS=paths,
    ) as daemon:
        say = lambda bot_id, text: emulator.state.inject(  # noqa: E731
            [{"bot_id": bot_id, "chat_id": 42, "text": text}]
        )
        say(echo.id, "still here")
        await _sent(emulator, echo.id, "still here")

        say(support.id, "/start")
        await _sent(emulator, support.id, "support bot")
        menu = [
            c for c in emulator.server.interactions.calls(support.id) or () if c["reply_markup"]
        ]
        async with emulator.control() as ctl:
            await ctl.press(support.id, 42, menu[0]["message_id"], "menu:form")
        await _sent(emulator, support.id, "What is your name?")
        say(support.id, "Ann")
        await _sent(emulator, support.id, "e-mail address?")
        pid = (await daemon.status())["workers"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        await daemon.wait_status(
            lambda s: s["workers"][0]["pid"] not in (None, pid) and s["ready"], timeout=60
        )
        say(support.id, "ann@example.org")
        await _sent(emulator, support.id, "What is the problem?")
        say(support.id, "the printer is on fire")
        done = await _sent(emulator, support.id, "Thanks, Ann!")
        assert "ann@example.org about: the printer is on fire" in done["text"]

        async with open_registry(settings) as registry:
            record = await registry.get(broken.id)
            assert record is not None
            assert record.state == BotState.DISABLED
            assert record.disabled_reason is not None
            assert "does not import: ModuleNotFoundError" in record.disabled_reason
            assert "no_such_dependency_xyz" in record.disabled_reason
            running = await registry.get(support.id)
            assert running is not None and running.state == BotState.ACTIVE
    # every message of the form answered once, in order, across the kill
    texts = [s["text"] for s in emulator.state.sent_log(support.id) or ()]
    assert [t for t in texts if "e-mail address?" in t] == ["Your e-mail address?"]
    assert not [t for t in texts if "does not look like" in t]
