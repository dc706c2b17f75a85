"""The durable inbox in the whole daemon: a worker SIGKILLed while its handlers wait for a
slow model leaves its updates pending in the inbox; its successor handles every one of
them, once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.openai import RunningLLMEmulator, open_llm_emulator
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.services import open_registry
from tests.daemon import start_daemon

pytestmark = pytest.mark.timeout(180)

BOTS = 4
CHATS = 5


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[RunningEmulator, RunningLLMEmulator]]:
    async with open_emulator() as emu, open_llm_emulator() as llm:
        yield emu, llm


async def test_sigkill_with_entries_pending_successor_handles_them_once(
    fresh_settings: Callable[..., Settings],
    emulators: tuple[RunningEmulator, RunningLLMEmulator],
    tmp_path: Path,
) -> None:
    emu, llm = emulators
    llm.state.latency_s = 3.0  # every handler is inside its model call when the kill comes
    settings = fresh_settings(
        workers={"count": 1, "heartbeat_timeout_s": 4.0},
        telegram={"poll_timeout_s": 1},
        bots={"inbox": True, "inbox_claim_idle_s": 2.0},
        openai={"base_url": llm.base_url, "api_key": "sk-test", "model": "emu-1"},
    )
    bots = emu.state.create_bots(BOTS)
    async with open_registry(settings) as registry:
        await registry.add_many([(BotToken(b.token), f"llm{b.id}") for b in bots], handler="openai")
    messages = [
        {"bot_id": b.id, "chat_id": c, "text": f"hello {c}"}
        for b in bots
        for c in range(1, CHATS + 1)
    ]
    async with start_daemon(
        settings, emu.base_url, tmp_path, expect_warnings=("worker.died",)
    ) as daemon:
        status = await daemon.status()
        assert status["workers"][0]["health"]["inbox"] == "ok"
        emu.state.inject(messages)
        async with asyncio.timeout(20):
            # all in the inbox and confirmed to Telegram; every handler waits for the model
            await emu.state.wait_until(lambda: all(not b.queue for b in bots))
            await llm.state.wait_started(len(messages))
        assert emu.state.replied == 0
        os.kill(status["workers"][0]["pid"], signal.SIGKILL)
        async with asyncio.timeout(60):
            await emu.state.wait_until(lambda: emu.state.replied >= len(messages))
        status = await daemon.status()
    totals = emu.state.stats(False)["totals"]
    assert totals["replied"] == len(messages)  # none lost
    assert totals["duplicates"] == 0  # none answered twice
    assert status["worker_restarts"] == 1
