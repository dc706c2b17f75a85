"""The daemon behind a SOCKS5 proxy with a password (pproxy): its bots poll and answer
through it, one bot goes through an HTTP proxy of its own (its settings), and neither
password shows in the daemon's log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.services import open_registry
from tests.daemon import start_daemon
from tests.e2e.test_daemon_e2e import register, wait_replied
from tests.proxies import open_proxy

pytestmark = pytest.mark.timeout(120)

SOCKS_PASSWORD = "e2e-socks-password-31337"
HTTP_PASSWORD = "e2e-http-password-42424"


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


async def test_bots_poll_and_answer_through_the_proxy_and_a_bot_through_its_own(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    async with (
        open_proxy("socks5", user="bv", password=SOCKS_PASSWORD) as socks,
        open_proxy("http", user="own", password=HTTP_PASSWORD) as http,
    ):
        settings = fresh_settings(workers={"count": 1}, telegram={"proxy": socks.url()})
        bots = await register(settings, emulator, 3)
        async with open_registry(settings) as registry:
            await registry.update(bots[2].id, settings={"telegram": {"proxy": http.url()}})
        async with start_daemon(settings, emulator.base_url, tmp_path) as daemon:
            emulator.state.inject(
                [
                    {"bot_id": b.id, "chat_id": 500 + i, "text": f"hi {i}"}
                    for i, b in enumerate(bots)
                ]
            )
            totals = await wait_replied(emulator, 3, 60)
        log = daemon.log_path.read_text()
    assert totals["lost"] == 0 and totals["duplicates"] == 0
    # the two bots on the deployment's proxy: a poll connection each, then their sends
    assert socks.tunnels >= 3
    # the third bot's poll and send went through its own proxy
    assert http.tunnels >= 2
    assert all(f":{emulator.port}" in line for line in socks.lines + http.lines if " -> " in line)
    assert SOCKS_PASSWORD not in log and HTTP_PASSWORD not in log
    assert "socks5://bv:***@127.0.0.1" in log  # the worker names the proxies it uses
