"""Issue 9 against the whole daemon: a private redis-server the test freezes (SIGSTOP),
the Bot API emulator as Telegram and the local OpenAI-compatible server recording
every prompt."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bots.telegram.token import BotToken
from config import Settings
from emulators.openai import RunningLLMEmulator, open_llm_emulator
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.services import open_registry
from tests.context_helpers import RedisProcess, TcpProxy, postgres_address, via_proxy
from tests.daemon import start_daemon

pytestmark = pytest.mark.timeout(180)

#: What a daemon logs while its Redis is frozen (each once, when it starts).
REDIS_FROZEN = (
    "progress.save_failed",
    "progress.load_failed",
    "heartbeat.redis_unavailable",
    "control.redis_unavailable",
    "context.redis_degraded",
    "actor.progress_not_saved",  # the watermark save at stop (ipc/offsets.py)
    "inbox.read_failed",  # the durable inbox (ipc/inbox.py) reads, appends and acks
    "inbox.append_failed",
    "inbox.ack_failed",
)


@pytest.fixture
async def redis_proc() -> AsyncIterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="bv-redis-") as tmp:
        proc = RedisProcess(Path(tmp) / "redis.sock")
        await proc.start()
        try:
            yield proc
        finally:
            signal_redis(proc, signal.SIGCONT)
            await proc.kill()


def signal_redis(proc: RedisProcess, sig: int) -> None:
    if proc.proc is not None and proc.proc.returncode is None:
        os.kill(proc.proc.pid, sig)


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[RunningEmulator, RunningLLMEmulator]]:
    async with open_emulator() as emu, open_llm_emulator() as llm:
        yield emu, llm


class Chat:
    def __init__(self, emu: RunningEmulator, llm: RunningLLMEmulator, bot_id: int) -> None:
        self.emu, self.llm, self.bot_id = emu, llm, bot_id

    async def say(self, text: str, timeout: float = 30) -> None:
        goal = self.emu.state.stats(False)["totals"]["replied"] + 1
        self.emu.state.inject([{"bot_id": self.bot_id, "chat_id": 7, "text": text}])
        async with asyncio.timeout(timeout):
            await self.emu.state.wait_until(
                lambda: self.emu.state.stats(False)["totals"]["replied"] >= goal
            )

    def prompt_of(self, text: str) -> list[dict[str, Any]]:
        """The last prompt whose newest user turn is `text`."""
        for seen in reversed(self.llm.state.requests):
            users = [m for m in seen.messages if m["role"] == "user"]
            if users and users[-1]["content"] == text:
                return seen.messages
        raise AssertionError(f"no prompt ended with {text!r}")


async def test_writes_held_while_redis_is_frozen_survive_sigterm_and_a_restart(
    fresh_settings: Callable[..., Settings],
    emulators: tuple[RunningEmulator, RunningLLMEmulator],
    redis_proc: RedisProcess,
    tmp_path: Path,
) -> None:
    """The issue's case: freeze Redis, 2 turns, SIGTERM, thaw, start again: the next
    prompt holds every earlier message."""
    emu, llm = emulators
    settings = fresh_settings(
        workers={"count": 1},
        telegram={"poll_timeout_s": 1},
        redis={"url": redis_proc.url, "timeout_s": 1.0},
        openai={"base_url": llm.base_url, "api_key": "sk-test", "model": "emu-1"},
    )
    (bot,) = emu.state.create_bots(1)
    async with open_registry(settings) as registry:
        await registry.add_many([(BotToken(bot.token), "llmbot")], handler="openai")
    chat = Chat(emu, llm, bot.id)
    async with start_daemon(
        settings, emu.base_url, tmp_path, expect_warnings=REDIS_FROZEN
    ) as daemon:
        await chat.say("one")
        await chat.say("two")
        signal_redis(redis_proc, signal.SIGSTOP)
        await chat.say("three")
        await chat.say("four")
        signalled = time.monotonic()
        assert await daemon.stop() == 0
        took = time.monotonic() - signalled
    signal_redis(redis_proc, signal.SIGCONT)
    async with start_daemon(settings, emu.base_url, tmp_path, expect_warnings=REDIS_FROZEN):
        await chat.say("five")
    said = [m["content"] for m in chat.prompt_of("five") if m["role"] in ("user", "assistant")]
    # every earlier message, each once, in order (the run lacked 3 of these 8)
    assert said == [
        "one",
        "you said one",
        "two",
        "you said two; earlier you said one",
        "three",
        "you said three; earlier you said two",
        "four",
        "you said four; earlier you said three",
        "five",
    ]
    assert took < 10, f"SIGTERM with Redis frozen took {took:.1f} s"


def worker_redis(data: dict[str, Any]) -> str:
    return str(data["workers"][0]["health"].get("redis", ""))


async def test_status_shows_a_frozen_redis_per_worker_and_sigterm_acts_at_once(
    fresh_settings: Callable[..., Settings],
    emulators: tuple[RunningEmulator, RunningLLMEmulator],
    redis_proc: RedisProcess,
    tmp_path: Path,
) -> None:
    """No chat writes meanwhile: the worker's heartbeat is what notices the outage. The
    default Redis timeout (5 s) is kept, so an unbounded wait at shutdown would show."""
    emu, _ = emulators
    settings = fresh_settings(
        workers={"count": 1}, telegram={"poll_timeout_s": 1}, redis={"url": redis_proc.url}
    )
    (bot,) = emu.state.create_bots(1)
    async with open_registry(settings) as registry:
        await registry.add_many([(BotToken(bot.token), "echobot")], handler="echo")
    async with start_daemon(
        settings, emu.base_url, tmp_path, expect_warnings=REDIS_FROZEN
    ) as daemon:
        assert worker_redis(await daemon.wait_status(lambda d: d["ready"])) == "ok"
        signal_redis(redis_proc, signal.SIGSTOP)
        await daemon.wait_status(lambda d: worker_redis(d) == "degraded", timeout=20)
        signal_redis(redis_proc, signal.SIGCONT)
        await daemon.wait_status(lambda d: worker_redis(d) == "ok", timeout=20)
        signal_redis(redis_proc, signal.SIGSTOP)
        await daemon.wait_status(lambda d: worker_redis(d) == "degraded", timeout=20)
        signalled = time.time()
        assert await daemon.stop() == 0
        exited = time.time()
    signal_redis(redis_proc, signal.SIGCONT)
    lines = daemon.log_lines()
    stopped = [r for r in lines if r.get("event") == "worker.stopped"]
    assert stopped, "the worker never logged worker.stopped"
    drained = _epoch(stopped[-1]["timestamp"]) - signalled
    assert drained < 1.5, f"the worker took {drained:.1f} s to drain with Redis frozen"
    assert exited - signalled < 3
    # health is logged when a layer changes: ok -> degraded -> ok -> degraded (+ slack),
    # not once a beat
    health = [r for r in lines if r.get("event") == "worker.health"]
    assert 3 <= len(health) <= 6, [r.get("redis") for r in health]


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def test_postgres_away_and_back_is_one_line_each_way_without_tracebacks(
    fresh_settings: Callable[..., Settings],
    emulators: tuple[RunningEmulator, RunningLLMEmulator],
    tmp_path: Path,
) -> None:
    emu, llm = emulators
    settings = fresh_settings(
        workers={"count": 1, "reconcile_interval_s": 0.5},
        telegram={"poll_timeout_s": 1},
        database={"timeout_s": 2.0},
        openai={"base_url": llm.base_url, "api_key": "sk-test", "model": "emu-1"},
    )
    (bot,) = emu.state.create_bots(1)
    async with open_registry(settings) as registry:
        await registry.add_many([(BotToken(bot.token), "llmbot")], handler="openai")
    assert settings.database.url is not None
    database_url = settings.database.url.get_secret_value()
    proxy = TcpProxy(postgres_address(database_url))
    await proxy.start()
    proxied = SecretStr(via_proxy(database_url, proxy.port))
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": proxied})}
    )
    chat = Chat(emu, llm, bot.id)
    try:
        async with start_daemon(
            settings,
            emu.base_url,
            tmp_path,
            expect_warnings=("reconcile.registry_unavailable", "context.postgres_degraded"),
        ) as daemon:
            await chat.say("one")
            await proxy.stop()  # PostgreSQL unreachable, its connections cut
            await chat.say("two")
            await daemon.wait_status(lambda d: d["workers"][0]["health"]["postgres"] != "ok")
            await proxy.start()
            await chat.say("three")
            status = await daemon.wait_status(
                lambda d: d["workers"][0]["health"]["postgres"] == "ok"
            )
            # reconcile passes met the cut connections: the worker lived through them
            await daemon.wait_metrics("botvisor_context_saves_total 6.0")
            status = await daemon.status()
    finally:
        await proxy.stop()
    assert status["worker_restarts"] == 0
    text = daemon.log_text()
    assert "Traceback" not in text and '"exception"' not in text
    lines = daemon.log_lines()
    for event in ("context.postgres_degraded", "context.postgres_recovered"):
        assert sum(1 for r in lines if r.get("event") == event) == 1, event
