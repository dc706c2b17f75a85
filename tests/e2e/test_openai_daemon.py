"""The whole daemon with an `openai` bot: worker wiring of the context store and the LLM
client, against the Bot API emulator and the local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.openai import RunningLLMEmulator, open_llm_emulator
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.services import open_registry
from tests.daemon import has_sample, start_daemon

ADMIN_KEY = "admin-secret-key-123-long-enough-now"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[RunningEmulator, RunningLLMEmulator]]:
    async with open_emulator() as emu, open_llm_emulator() as llm:
        yield emu, llm


async def test_an_openai_bot_in_the_daemon_remembers_the_conversation(
    fresh_settings: Callable[..., Settings],
    emulators: tuple[RunningEmulator, RunningLLMEmulator],
    tmp_path: Path,
) -> None:
    emu, llm = emulators
    settings = fresh_settings(
        workers={"count": 1},
        telegram={"poll_timeout_s": 1},
        openai={"base_url": llm.base_url, "api_key": "sk-test", "model": "emu-1"},
    )
    (bot,) = emu.state.create_bots(1)
    async with open_registry(settings) as registry:
        await registry.add_many([(BotToken(bot.token), "llmbot")], handler="openai")

    async def say(text: str, replies: int) -> None:
        emu.state.inject([{"bot_id": bot.id, "chat_id": 5, "text": text}])
        async with asyncio.timeout(30):
            await emu.state.wait_until(
                lambda: emu.state.stats(False)["totals"]["replied"] >= replies
            )

    async with start_daemon(settings, emu.base_url, tmp_path) as daemon:
        await say("my name is Ann", 1)
        await say("what is my name?", 2)
        assert daemon.proc.returncode is None
        # two user and two assistant messages saved (the last one after its reply)
        text = await daemon.wait_metrics("botvisor_context_saves_total 4.0")
    assert has_sample(text, 'botvisor_llm_requests_total{outcome="ok"} 2.0')
    assert has_sample(text, 'botvisor_context_degraded{layer="redis"} 0.0')
    assert "bot_id" not in text  # metrics.per_bot_labels is off
    promtool = shutil.which("promtool") or str(Path("tools/promtool").absolute())
    check = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(check.communicate(text.encode()), 30)
    assert check.returncode == 0, out.decode()
    sent = [m["text"] for m in emu.state.sent_log(bot.id) or []]
    assert sent == [
        "you said my name is Ann",
        "you said what is my name?; earlier you said my name is Ann",
    ]
    assert llm.state.requests[-1].model == "emu-1"


async def test_operator_handoff_is_released_through_the_admin_api(
    fresh_settings: Callable[..., Settings],
    emulators: tuple[RunningEmulator, RunningLLMEmulator],
    tmp_path: Path,
) -> None:
    emu, llm = emulators
    settings = fresh_settings(
        workers={"count": 1},
        telegram={"poll_timeout_s": 1},
        openai={"base_url": llm.base_url, "api_key": "sk-test", "model": "emu-1"},
        security={"admin_key": ADMIN_KEY},
    )
    (bot,) = emu.state.create_bots(1)
    async with open_registry(settings) as registry:
        await registry.add_many([(BotToken(bot.token), "llmbot")], handler="openai")
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def sent_to(chat: int) -> int:
        return sum(1 for m in emu.state.sent_log(bot.id) or [] if m["chat_id"] == chat)

    async with start_daemon(settings, emu.base_url, tmp_path) as daemon:
        emu.state.inject([{"bot_id": bot.id, "chat_id": 7, "text": "/operator"}])
        async with asyncio.timeout(30):
            await emu.state.wait_until(lambda: sent_to(7) >= 1)  # "a human will answer"
        # handed off: a question in that chat gets no bot reply, while another chat does
        emu.state.inject([{"bot_id": bot.id, "chat_id": 7, "text": "hello?"}])
        emu.state.inject([{"bot_id": bot.id, "chat_id": 8, "text": "hi"}])
        async with asyncio.timeout(30):
            await emu.state.wait_until(lambda: sent_to(8) >= 1)
        assert sent_to(7) == 1
        url = f"{daemon.http}/v1/bots/{bot.id}/chats/7/release"
        async with daemon.session.post(url, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["released"] is True
        # a chat that is not handed off: 404, and nothing is written
        async with daemon.session.post(url.replace("/7/", "/-99/"), headers=headers) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_handed_off"
        async with daemon.session.post(url) as resp:
            assert resp.status == 401
        emu.state.inject([{"bot_id": bot.id, "chat_id": 7, "text": "back?"}])
        async with asyncio.timeout(30):
            await emu.state.wait_until(lambda: sent_to(7) >= 2)
