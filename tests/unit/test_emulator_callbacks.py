"""The emulator's inline-keyboard side: callback queries injected, answers and edits
checked and recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from emulators.telegram import ControlError
from emulators.telegram.server import RunningEmulator, open_emulator


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as e:
        yield e


async def _api(emu: RunningEmulator, token: str, method: str, body: dict[str, object]) -> dict:
    async with aiohttp.ClientSession() as s:
        url = f"{emu.base_url}/bot{token}/{method}"
        async with s.post(url, json=body, timeout=aiohttp.ClientTimeout(total=10)) as r:
            return dict(await r.json())


async def test_press_answer_edit_and_the_call_log(emu: RunningEmulator) -> None:
    (bot,) = emu.state.create_bots(1)
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    sent = await _api(
        emu, bot.token, "sendMessage", {"chat_id": 5, "text": "menu", "reply_markup": markup}
    )
    assert sent["result"]["reply_markup"] == markup
    message_id = sent["result"]["message_id"]
    async with emu.control() as ctl:
        query = await ctl.press(bot.id, 5, message_id, "go")
        updates = await _api(emu, bot.token, "getUpdates", {"timeout": 0})
        cq = updates["result"][0]["callback_query"]
        assert (cq["id"], cq["data"], cq["message"]["text"]) == (query, "go", "menu")
        assert cq["from"]["id"] == 5

        answer = {"callback_query_id": query, "text": "ok"}
        assert (await _api(emu, bot.token, "answerCallbackQuery", answer))["ok"] is True
        again = await _api(emu, bot.token, "answerCallbackQuery", answer)
        assert again["error_code"] == 400  # answered once only
        edit = {"chat_id": 5, "message_id": message_id, "text": "menu"}
        assert (await _api(emu, bot.token, "editMessageText", edit))["description"].endswith(
            "message is not modified"
        )
        edit["text"] = "done"
        assert (await _api(emu, bot.token, "editMessageText", edit))["result"]["text"] == "done"
        gone = {"chat_id": 5, "message_id": 99, "reply_markup": markup}
        assert (await _api(emu, bot.token, "editMessageReplyMarkup", gone))["error_code"] == 400
        calls = await ctl.calls(bot.id)
        assert [c["method"] for c in calls] == [
            "sendMessage",
            "answerCallbackQuery",
            "editMessageText",
        ]
        with pytest.raises(ControlError):
            await ctl.press(12345, 5, 1, "x")
        with pytest.raises(ControlError):
            await ctl.calls(12345)
