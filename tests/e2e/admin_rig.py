"""The in-process admin API rig shared by tests/e2e/test_admin_*.py: an app on a fresh
database with two owners, the Bot API emulator, and a client that speaks JSON."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.http.app import make_app
from supervisor.http.common import AdminContext
from supervisor.master.arbiter import Master
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry

ADMIN_KEY = "admin-" + secrets.token_urlsafe(32)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    settings: Settings
    emulator: RunningEmulator
    alice: str  # owner keys
    bob: str
    alice_id: int

    async def call(
        self, method: str, path: str, key: str | None, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        data = raw if raw is not None else (None if body is None else orjson.dumps(body))
        async with self.client.request(method, path, data=data, headers=headers) as resp:
            payload = await resp.read()
            return resp.status, orjson.loads(payload) if payload else None

    async def register(self, key: str, **body: Any) -> dict[str, Any]:
        bot = self.emulator.state.create_bots(1)[0]
        status, data = await self.call("POST", "/v1/bots", key, {"token": bot.token, **body})
        assert status == 201, data
        return dict(data)


@pytest.fixture
async def api(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator
) -> AsyncIterator[Api]:
    # tests here send many wrong keys on purpose; the lockout has tests of its own
    settings = fresh_settings(
        security={"admin_key": ADMIN_KEY, "login_free_failures": 1000},
        telegram={"api_base": emulator.base_url},
    )
    async with open_registry(settings) as registry, aiohttp.ClientSession() as session:
        alice_owner, alice = await create_owner(registry, "alice")
        _, bob = await create_owner(registry, "bob")
        app = make_app(Master(settings), registry, AdminContext(registry, settings, session))
        async with TestClient(TestServer(app)) as client:
            yield Api(client, app, settings, emulator, alice, bob, alice_owner.id)


def error_of(data: Any) -> tuple[str, str]:
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}, data
    return data["error"]["code"], data["error"]["message"]
