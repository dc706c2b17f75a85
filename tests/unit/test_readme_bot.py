"""The README's "Write your own bot" Router, exactly as printed, runs on the bridge."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bots.handlers import plugins
from bots.handlers.registry import check_settings
from bots.telegram.sessions import SessionPool
from emulators.telegram.server import RunningEmulator, open_emulator
from tests.unit.test_aiogram_bridge import _call, _run, _sent_text

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def readme_bot(tmp_path: Path) -> Iterator[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Write your own bot", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python block in the README's 'Write your own bot'"
    package = tmp_path / "mybots"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hello.py").write_text(re.sub(r"(?m)^   ", "", code.group(1)))
    plugins.use_paths([tmp_path])
    yield "mybots.hello:router"
    sys.path.remove(str(tmp_path.absolute()))
    for name in ("mybots", "mybots.hello"):
        sys.modules.pop(name, None)
    plugins._loaded.clear()


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(per_chat="100/1") as e:
        yield e


async def test_the_readme_router_answers_commands_buttons_and_text(
    emu: RunningEmulator, readme_bot: str, session: SessionPool
) -> None:
    assert check_settings(readme_bot, {"greeting": "Hi there"}) == []
    assert check_settings(readme_bot, {"greting": "typo"})[0].startswith("greting: unknown")
    (bot,) = emu.state.create_bots(1)
    handle = await _run(emu, session, bot.token, {"greeting": "Hi there"}, ref=readme_bot)
    emu.state.inject([{"bot_id": bot.id, "chat_id": 42, "text": "/start"}])
    menu = await _call(emu, bot.id, "sendMessage")
    assert menu["text"] == "Hi there"
    async with emu.control() as ctl:
        await ctl.press(bot.id, 42, menu["message_id"], "ping")
    answer = await _call(emu, bot.id, "answerCallbackQuery")
    assert answer["text"] == "pong"
    emu.state.inject([{"bot_id": bot.id, "chat_id": 42, "text": "echo me"}])
    reply = await _sent_text(emu, bot.id, "echo me")
    assert reply["reply_to"] is not None
    await handle.stop()
