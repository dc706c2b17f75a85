"""`botvisor chats release` in a real subprocess against the test Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Callable

from config import Settings
from context import handed_off, handoff_changes, open_context_store
from tests.context_helpers import ensure_migrated
from tests.daemon import daemon_env


async def test_chats_release_gives_a_handed_off_chat_back_to_its_bot(
    settings_factory: Callable[..., Settings], database_url: str
) -> None:
    await ensure_migrated(database_url)
    settings = settings_factory()
    bot, chat = secrets.randbelow(2**40) + 1, -100123  # a group: negative id
    async with open_context_store(settings) as store:
        await store.save(bot, chat, handoff_changes("command"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "supervisor.cli.main",
        "chats",
        "release",
        str(bot),
        "--",
        str(chat),
        env=daemon_env(settings, "http://127.0.0.1:9", 0),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert f"bot {bot} chat {chat}: released" in out.decode()
    async with open_context_store(settings) as fresh:
        assert not handed_off(await fresh.load(bot, chat))
