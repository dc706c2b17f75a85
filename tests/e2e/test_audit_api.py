"""Quotas and the audit log through the admin API and the manager bot, in process: the
master's app on real PostgreSQL and Redis, the Bot API emulator as Telegram."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bots.handlers.base import BotContext
from bots.handlers.manager import ManagerHandler
from bots.telegram.api import BotApi
from bots.telegram.token import BotToken
from bots.telegram.update import Incoming
from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from ratelimit import BotLimiter, Limits, Rate
from supervisor.http.app import make_app
from supervisor.http.common import AdminContext
from supervisor.master.arbiter import Master
from supervisor.master.housekeeping import Housekeeping
from supervisor.registry.audit import AuditLog, open_audit
from supervisor.registry.bots import Registry
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry
from supervisor.worker.manager_admin import ManagerAdmin

ADMIN_KEY = "admin-" + secrets.token_urlsafe(32)


@dataclass
class Rig:
    client: TestClient[web.Request, web.Application]
    settings: Settings
    emulator: RunningEmulator
    registry: Registry
    audit: AuditLog
    redis: aioredis.Redis
    session: aiohttp.ClientSession
    keys: dict[str, str]  # owner name -> API key
    ids: dict[str, int]  # owner name -> id

    async def call(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"}
        data = None if body is None else orjson.dumps(body)
        async with self.client.request(method, path, data=data, headers=headers) as resp:
            payload = await resp.read()
            return resp.status, orjson.loads(payload) if payload else None

    async def rows(self, key: str, query: str = "") -> list[dict[str, Any]]:
        status, page = await self.call("GET", f"/v1/audit?limit=1000{query}", key)
        assert status == 200, page
        return list(page["entries"])


@pytest.fixture
async def rig(settings_factory: Callable[..., Settings]) -> AsyncIterator[Rig]:
    # the run's shared database: owners of this test's own, rows told apart by owner/target
    settings = settings_factory(security={"admin_key": ADMIN_KEY})
    assert settings.redis.url is not None
    redis = aioredis.from_url(settings.redis.url, socket_timeout=5)
    async with (
        open_emulator(per_chat=None) as emu,
        open_registry(settings) as registry,
        aiohttp.ClientSession() as session,
        open_audit(registry.pool) as audit,
    ):
        settings = settings.model_copy(
            update={"telegram": settings.telegram.model_copy(update={"api_base": emu.base_url})}
        )
        keys, ids = {}, {}
        for name in ("alice", "bob"):
            owner, keys[name] = await create_owner(registry, f"{name}-{secrets.token_hex(4)}")
            ids[name] = owner.id
        ctx = AdminContext(registry, settings, session, None, redis, audit=audit)
        app = make_app(Master(settings), registry, ctx)
        async with TestClient(TestServer(app)) as client:
            yield Rig(client, settings, emu, registry, audit, redis, session, keys, ids)
    await redis.aclose()


def _token(rig: Rig) -> str:
    return rig.emulator.state.create_bots(1)[0].token


async def test_a_bots_quota_refuses_registration_with_a_typed_403_and_it_is_all_audited(
    rig: Rig,
) -> None:
    alice, owner = rig.keys["alice"], rig.ids["alice"]
    status, body = await rig.call("PUT", f"/v1/owners/{owner}/quota", ADMIN_KEY, {"bots": 1})
    assert status == 200, body
    assert body["quota"]["bots"] == 1 and body["override"]["bots"] == 1
    assert body["override"]["messages_per_day"] is None  # left to the [quotas] default

    status, bot = await rig.call("POST", "/v1/bots", alice, {"token": _token(rig)})
    assert status == 201, bot
    status, body = await rig.call("POST", "/v1/bots", alice, {"token": _token(rig)})
    assert status == 403
    assert body["error"]["code"] == "quota_exceeded"
    assert (body["error"]["quota"], body["error"]["limit"], body["error"]["used"]) == ("bots", 1, 1)
    status, _ = await rig.call("POST", f"/v1/bots/{bot['id']}/pause", alice)
    assert status == 200
    status, shown = await rig.call("GET", f"/v1/owners/{owner}", alice)
    assert status == 200 and shown["usage"]["bots"] == 1

    rows = list(reversed(await rig.rows(alice)))
    seen = [(r["actor"], r["action"], r["outcome"]) for r in rows]
    me = f"owner:{owner}"
    assert seen == [
        ("admin", "owner.set_quota", "ok"),
        (me, "bot.register", "ok"),
        (me, "bot.register", "quota_exceeded"),
        (me, "bot.pause", "ok"),
    ]
    assert {r["source"] for r in rows} == {"http:127.0.0.1"}
    assert rows[1]["target"] == rows[3]["target"] == f"bot:{bot['id']}"
    assert rows[1]["detail"]["handler"] == "echo"
    await rig.registry.remove(bot["id"])  # the emulator's ids repeat per run


async def test_owners_see_only_their_own_owner_and_audit_rows(rig: Rig) -> None:
    alice, bob = rig.keys["alice"], rig.keys["bob"]
    status, bot = await rig.call("POST", "/v1/bots", alice, {"token": _token(rig)})
    assert status == 201
    await rig.call("POST", f"/v1/bots/{bot['id']}/pause", alice)
    await rig.call("POST", f"/v1/bots/{bot['id']}/resume", alice)

    assert (await rig.call("GET", f"/v1/owners/{rig.ids['alice']}", bob))[0] == 404
    assert (await rig.call("POST", f"/v1/bots/{bot['id']}/pause", bob))[0] == 404
    status, body = await rig.call("PUT", f"/v1/owners/{rig.ids['bob']}/quota", bob, {"bots": 99})
    assert status == 403 and body["error"]["code"] == "forbidden"

    bobs = await rig.rows(bob)
    assert [(r["action"], r["outcome"]) for r in reversed(bobs)] == [
        ("bot.pause", "not_found"),
        ("owner.set_quota", "forbidden"),
    ]
    assert all(r["owner_id"] == rig.ids["bob"] for r in bobs)
    alices = await rig.rows(alice)
    assert [r["action"] for r in alices] == ["bot.resume", "bot.pause", "bot.register"]

    # the admin sees both (the run's database is shared: rows of this test's owners)
    target = f"&target=bot:{bot['id']}"
    ours = [r for r in await rig.rows(ADMIN_KEY, target) if r["owner_id"] in rig.ids.values()]
    assert len(ours) == 4  # bob's refused pause included
    status, page = await rig.call("GET", f"/v1/audit?action=bot.&limit=2{target}", alice)
    assert [r["action"] for r in page["entries"]] == ["bot.resume", "bot.pause"]
    status, page = await rig.call(
        "GET", f"/v1/audit?action=bot.&limit=2&before={page['next_before']}{target}", alice
    )
    assert [r["action"] for r in page["entries"]] == ["bot.register"]
    assert page["next_before"] is None
    status, body = await rig.call("GET", "/v1/audit?since=yesterday", alice)
    assert status == 422 and "since" in body["error"]["message"]
    await rig.registry.remove(bot["id"])


def _update(n: int, user: int, text: str) -> Incoming:
    chat = {"id": user, "type": "private"}
    sender = {"id": user, "is_bot": False, "first_name": "U"}
    message = {"message_id": n, "from": sender, "chat": chat, "date": 0, "text": text}
    return Incoming({"update_id": n, "message": message})


async def test_manager_bot_actions_are_audited_as_the_telegram_user_and_hold_no_secret(
    rig: Rig,
) -> None:
    (manager_bot,) = rig.emulator.state.create_bots(1)
    token = BotToken(manager_bot.token)
    generous = Limits(Rate(1000, 1), Rate(1000, 1), Rate(1000, 1))
    api = BotApi(
        rig.session,
        rig.emulator.base_url,
        token,
        BotLimiter(generous),
        request_timeout=5,
        max_retries=1,
    )
    admin = ManagerAdmin(
        rig.registry, rig.registry.pool, rig.session, lambda: rig.settings, audit=rig.audit
    )
    handler = ManagerHandler(admin)
    ctx = BotContext(token.bot_id, "manager_bot", api, {})
    new_bot = _token(rig)
    wrong_key = f"bvo_{rig.ids['alice']}_{secrets.token_urlsafe(32)}"
    n = count(1)
    for user, text in (
        (901, f"/login {wrong_key}"),
        (901, f"/login {rig.keys['alice']}"),
        (901, f"/addbot {new_bot}"),
        (901, f"/pause {new_bot.split(':')[0]}"),
    ):
        await handler.handle(_update(next(n), user, text), ctx)
    await rig.audit.flush()

    alices = list(reversed(await rig.rows(rig.keys["alice"])))
    assert [(r["actor"], r["action"], r["outcome"], r["source"]) for r in alices] == [
        (f"owner:{rig.ids['alice']}", "manager.login", "ok", "telegram:901"),
        (f"owner:{rig.ids['alice']}", "bot.register", "ok", "telegram:901"),
        (f"owner:{rig.ids['alice']}", "bot.pause", "ok", "telegram:901"),
    ]
    refused = await rig.rows(ADMIN_KEY, "&action=manager.login&target=telegram:901")
    assert [r["outcome"] for r in refused] == ["ok", "bad_key"]

    # nothing secret in any row: tokens, owner keys, the admin key
    text = orjson.dumps(await rig.rows(ADMIN_KEY)).decode()
    for secret in (
        new_bot.split(":")[1],
        rig.keys["alice"],
        wrong_key,
        ADMIN_KEY,
        manager_bot.token.split(":")[1],
    ):
        assert secret not in text
    await rig.registry.remove(int(new_bot.split(":")[0]))


async def test_the_master_prunes_rows_past_the_retention(rig: Rig) -> None:
    marker = f"prune-{secrets.token_hex(4)}"
    await rig.registry.pool.executemany(
        "INSERT INTO audit_log (actor, action, target, source, outcome, at)"
        " VALUES ('admin', 'test.prune', $1, 'cli', 'ok', now() - make_interval(days => $2))",
        [(marker, 40), (marker, 10)],
    )
    settings = rig.settings.model_copy(
        update={"audit": rig.settings.audit.model_copy(update={"retention_days": 30})}
    )
    chores = Housekeeping(settings, rig.registry, rig.redis, rig.audit)
    await chores.tick(0.0)  # the master's periodic pass: usage sync, then pruning
    ages = await rig.registry.pool.fetch(
        "SELECT extract(day FROM now() - at)::int AS days FROM audit_log WHERE target = $1",
        marker,
    )
    assert [r["days"] for r in ages] == [10]


async def test_an_audit_write_fault_delays_rows_but_never_fails_the_action(rig: Rig) -> None:
    async with open_registry(rig.settings) as registry:
        broken = AuditLog(registry.pool, timeout=1.0)
    # its pool is closed now: PostgreSQL "went away"
    broken.record("admin", "test.fault", "x", source="cli")  # returns, raises nothing
    assert broken.pending == 1
    assert not await broken.flush(1.0)
    assert broken.pending == 1  # kept for the next try


async def test_broadcast_starts_and_cancels_are_audited_from_the_api_and_the_cli(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    from supervisor.cli.broadcast import broadcast_command
    from supervisor.cli.parser import build_parser

    alice, bob = rig.keys["alice"], rig.keys["bob"]
    status, bot = await rig.call("POST", "/v1/bots", alice, {"token": _token(rig)})
    assert status == 201
    path = f"/v1/bots/{bot['id']}/broadcasts"
    status, started = await rig.call("POST", path, ADMIN_KEY, {"text": "secret sale"})
    assert status == 201
    one = f"bot:{bot['id']}/broadcast:{started['id']}"
    assert (await rig.call("DELETE", f"{path}/{started['id']}", bob))[0] == 404
    assert (await rig.call("DELETE", f"{path}/{started['id']}", alice))[0] == 200
    args = build_parser([]).parse_args(["broadcast", str(bot["id"]), "--text", "secret", "--json"])
    assert await broadcast_command(rig.settings, args) == 0
    cli_id = orjson.loads(capsys.readouterr().out)["id"]
    args = build_parser([]).parse_args(["broadcast", str(bot["id"]), "--cancel", str(cli_id)])
    assert await broadcast_command(rig.settings, args) == 0

    rows = await rig.rows(alice, "&action=broadcast.")  # the admin's on alice's bot too
    two = f"bot:{bot['id']}/broadcast:{cli_id}"
    assert [(r["actor"], r["action"], r["target"], r["source"]) for r in reversed(rows)] == [
        ("admin", "broadcast.start", one, "http:127.0.0.1"),
        (f"owner:{rig.ids['alice']}", "broadcast.cancel", one, "http:127.0.0.1"),
        ("admin", "broadcast.start", two, "cli"),
        ("admin", "broadcast.cancel", two, "cli"),
    ]
    assert rows[-1]["detail"] == {"total": 0, "buttons": 0}
    assert "secret" not in str(rows)
    (refused,) = await rig.rows(bob, "&action=broadcast.")
    assert (refused["outcome"], refused["target"]) == ("not_found", one)
    await rig.registry.remove(bot["id"])
