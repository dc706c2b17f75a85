"""The in-process dashboard rig shared by tests/e2e/test_dashboard*.py: the master's app
on a fresh database with two owners, the Bot API emulator, a context store, and
`Browser`, a cookie-keeping client that reads CSRF tokens from the pages."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config import Settings
from context import ContextStore, open_context_store
from emulators.telegram.server import RunningEmulator, open_emulator
from ipc.redis_client import redis_client
from supervisor.http.app import make_app
from supervisor.http.common import AdminContext
from supervisor.master.arbiter import Master
from supervisor.registry.audit import AuditLog, open_audit
from supervisor.registry.bots import Registry
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry

ADMIN_KEY = "admin-" + secrets.token_urlsafe(32)
_CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, html[:2000]
    return match.group(1)


@dataclass
class Browser:
    """One browser: its own cookies, no redirects followed unless asked."""

    client: TestClient[web.Request, web.Application]
    cookies: dict[str, str] = field(default_factory=dict)
    last_set_cookie: list[str] = field(default_factory=list)

    async def request(
        self, method: str, path: str, data: dict[str, str] | None = None, follow: bool = False
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        for _ in range(5):
            self.client.session.cookie_jar.clear()  # ours, not aiohttp's, decide what is sent
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
            async with self.client.request(
                method, path, data=data, headers=headers, allow_redirects=False
            ) as resp:
                body = await resp.text()
                self.last_set_cookie = resp.headers.getall("Set-Cookie", [])
                for raw in self.last_set_cookie:
                    for name, morsel in SimpleCookie(raw).items():
                        if morsel["max-age"] == "0" or morsel.value == "":
                            self.cookies.pop(name, None)
                        else:
                            self.cookies[name] = morsel.value
                if not (follow and resp.status in (302, 303)):
                    return resp.status, body, resp
                method, path, data = "GET", resp.headers["Location"], None
        raise AssertionError("redirect loop")

    async def login(self, key: str) -> tuple[int, str]:
        _, page, _ = await self.request("GET", "/ui/login")
        status, body, resp = await self.request(
            "POST", "/ui/login", {"_csrf": csrf_of(page), "key": key}
        )
        if status == 303:
            return status, resp.headers["Location"]
        return status, body

    async def csrf(self, path: str = "/ui/bots") -> str:
        status, page, _ = await self.request("GET", path)
        assert status == 200, page[:500]
        return csrf_of(page)


@dataclass
class Rig:
    client: TestClient[web.Request, web.Application]
    settings: Settings
    emulator: RunningEmulator
    registry: Registry
    context: ContextStore
    alice: str
    bob: str
    alice_id: int
    audit: AuditLog

    def browser(self) -> Browser:
        return Browser(self.client)

    async def add_bot(self, browser: Browser, **fields: str) -> tuple[int, str]:
        """Add a bot through the form; returns (status, Location or page)."""
        token = fields.pop("token", None) or self.emulator.state.create_bots(1)[0].token
        form = {"_csrf": await browser.csrf("/ui/bots/new"), "token": token, **fields}
        status, body, resp = await browser.request("POST", "/ui/bots/new", form)
        return status, resp.headers.get("Location", body)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


@pytest.fixture
async def rig_factory(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator
) -> AsyncIterator[Callable[..., Any]]:
    """make(**sections) -> Rig; sections override the settings (e.g. dashboard=…)."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**sections: Any) -> Rig:
            settings = fresh_settings(
                {
                    "security": {"admin_key": ADMIN_KEY, "login_free_failures": 1000},
                    "telegram": {"api_base": emulator.base_url},
                },
                **sections,
            )
            registry = await stack.enter_async_context(open_registry(settings))
            session = await stack.enter_async_context(aiohttp.ClientSession())
            redis = await stack.enter_async_context(
                contextlib.aclosing(redis_client(settings.redis.url or "", 5.0, 8))
            )
            store = await stack.enter_async_context(open_context_store(settings, redis=redis))
            alice_owner, alice = await create_owner(registry, "alice")
            _, bob = await create_owner(registry, "bob")
            audit = await stack.enter_async_context(open_audit(registry.pool))
            admin = AdminContext(registry, settings, session, store, redis, audit=audit)
            app = make_app(Master(settings), registry, admin)
            client = await stack.enter_async_context(TestClient(TestServer(app)))
            return Rig(
                client, settings, emulator, registry, store, alice, bob, alice_owner.id, audit
            )

        yield make
