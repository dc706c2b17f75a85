"""The emulator documents itself: `botvisor emulator --help` says how to create bots and
inject messages, and its control API is served as OpenAPI, listing every endpoint."""

from __future__ import annotations

import subprocess
import sys

import aiohttp

from emulators.telegram.openapi import CONTROL
from emulators.telegram.server import EmulatorServer, open_emulator


def test_emulator_help_explains_creating_bots_and_injecting_messages() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", "emulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith("usage: botvisor emulator")
    for needle in ("POST /control/bots", "POST /control/inject", "/control/openapi.json"):
        assert needle in run.stdout
    assert "BOTVISOR_TELEGRAM__API_BASE=" in run.stdout and "botvisor bots add" in run.stdout


async def test_the_control_api_is_served_as_openapi_covering_every_endpoint() -> None:
    async with open_emulator() as emu, aiohttp.ClientSession() as session:
        base = emu.base_url
        async with session.get(f"{base}/control/openapi.json") as resp:
            assert resp.status == 200
            doc = await resp.json()
        assert doc["openapi"].startswith("3.1")
        documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
        assert documented == {(op.method, op.path) for op in CONTROL}
        # every fixed-name endpoint the server routes is documented, and nothing else
        server = EmulatorServer(emu.state)
        routed = {("GET", f"/control/{name}") for name in server.control_routes.get_routes}
        routed |= {("POST", f"/control/{name}") for name in server.control_routes.post_routes}
        assert routed == {(m, p) for m, p in documented if "{" not in p}
        # the documented examples work as written
        for op in CONTROL:
            if op.method == "POST" and op.path in ("/control/bots", "/control/reset_stats"):
                async with session.post(base + op.path, data=op.example) as resp:
                    assert resp.status == 200, await resp.text()
