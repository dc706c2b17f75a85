"""Regression tests of issue 10's reproductions against the admin API: no 5xx for any
input, a failed request changes nothing, one unreadable row never breaks a list, wrong
keys are locked out. In-process app (tests/e2e/test_admin_api.py's rig), real PostgreSQL,
Redis and Bot API emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from config import ConfigError, Settings, load_settings
from context import open_context_store
from context.handoff import handoff_changes
from emulators.telegram.server import RunningEmulator
from supervisor.http.app import make_app
from supervisor.http.common import ADMIN_KEY as ADMIN_CONTEXT
from supervisor.http.common import AdminContext
from supervisor.master.arbiter import Master
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry
from tests.e2e.admin_rig import ADMIN_KEY, Api, error_of

pytestmark = pytest.mark.timeout(120)
INT64 = 2**63 - 1


class Nested:
    """`depth` objects inside each other, as JSON text (orjson will not write 300 levels)."""

    def __init__(self, depth: int) -> None:
        self.json = '{"a":' * depth + "1" + "}" * depth


async def raw_request(api: Api, head: bytes) -> bytes:
    """One request written byte for byte (aiohttp's client would refuse some of these)."""
    server = api.client.server
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"n": 1e20}, "±2^53"),
        ({"n": -(2**60)}, "±2^53"),
        (Nested(300), "nested"),
        (Nested(17), "nested"),
        ({"s": "a\x00b"}, "NUL"),
        ({"a\x00": 1}, "NUL"),
        ({"big": "x" * 70_000}, "bytes"),
        ({"ratelimit": {"per_bot": {"limit": -5}}}, "ratelimit"),
        ({"ratelimit": {"per_bot": 7}}, "ratelimit"),
        ({"ratelimit": {"nonsense": 1}}, "ratelimit"),
    ],
)
async def test_settings_the_workers_would_refuse_are_422_and_change_nothing(
    api: Api, settings: Any, why: str
) -> None:
    text = settings.json if isinstance(settings, Nested) else orjson.dumps(settings).decode()
    bot = await api.register(api.alice, settings={"ratelimit": {"per_chat": {"limit": 1}}})
    raw = ('{"settings":' + text + "}").encode()
    status, data = await api.call("PATCH", f"/v1/bots/{bot['id']}", api.alice, raw=raw)
    assert status == 422, data
    assert why in error_of(data)[1]
    status, data = await api.call("GET", f"/v1/bots/{bot['id']}", ADMIN_KEY)
    assert status == 200 and data == bot  # same settings, same revision
    new = api.emulator.state.create_bots(1)[0]
    raw = ('{"token":' + orjson.dumps(new.token).decode() + ',"settings":' + text + "}").encode()
    status, data = await api.call("POST", "/v1/bots", ADMIN_KEY, raw=raw)
    assert status == 422, data
    status, data = await api.call("GET", "/v1/bots", ADMIN_KEY)
    assert status == 200 and [b["id"] for b in data["bots"]] == [bot["id"]]


async def test_one_unreadable_stored_row_says_so_and_the_list_still_works(api: Api) -> None:
    good = await api.register(api.alice)
    bad = await api.register(api.bob)
    assert api.settings.database.url is not None
    conn = await asyncpg.connect(api.settings.database.url.get_secret_value(), timeout=10)
    try:  # what an older version let through
        await conn.execute(
            "UPDATE bots SET settings = '{\"n\": 1e20}'::jsonb WHERE id = $1", bad["id"], timeout=10
        )
    finally:
        await conn.close(timeout=10)
    status, data = await api.call("GET", "/v1/bots", ADMIN_KEY)
    assert status == 200, data
    rows = {b["id"]: b for b in data["bots"]}
    assert rows[good["id"]]["problem"] is None
    assert rows[bad["id"]]["settings"] == {} and "unreadable" in rows[bad["id"]]["problem"]
    status, data = await api.call("GET", f"/v1/bots/{bad['id']}", api.bob)
    assert status == 200 and data["problem"]
    # and it can be repaired
    status, data = await api.call("PATCH", f"/v1/bots/{bad['id']}", api.bob, {"settings": {}})
    assert status == 200 and data["problem"] is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"token": "0:" + "A" * 35}, "invalid"),  # bot id 0
        ({"token": f"{INT64 + 1}:" + "A" * 35}, "invalid"),  # above int64
        ({"token": "123456:" + "A" * 9000}, "invalid"),  # 9,000-character secret
        ({"token": "١٢٣٤٥٦:" + "A" * 35}, "invalid"),  # Arabic-Indic digits
        ({"token": "123456:" + "A" * 35, "owner": "al\x00ice"}, "invalid"),
        ({"token": "123456:" + "A" * 35, "handler": "echo\x00"}, "invalid"),
    ],
)
async def test_tokens_and_names_out_of_range_are_422_not_5xx(
    api: Api, body: dict[str, Any], code: str
) -> None:
    status, data = await api.call("POST", "/v1/bots", ADMIN_KEY, body)
    assert status == 422, data
    assert error_of(data)[0] in {code, "invalid_token"}
    status, data = await api.call("GET", "/v1/bots", ADMIN_KEY)
    assert data["bots"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/bots/0",
        f"/v1/bots/{INT64 + 1}",
        "/v1/bots/18446744073709551615",
        "/v1/bots/%D9%A1%D9%A2",  # Arabic-Indic digits
        "/v1/bots/%EF%BC%91",  # full-width 1
    ],
)
async def test_ids_outside_ascii_int64_reach_no_bot(api: Api, path: str) -> None:
    await api.register(api.alice)
    status, data = await api.call("GET", path, ADMIN_KEY)
    assert status == 404, data
    assert error_of(data)[0] == "not_found" or error_of(data)[0].startswith("not")


async def test_a_non_utf8_byte_in_authorization_is_401(api: Api) -> None:
    for key in (b"bvo_1_\xc4", b"\xff\xfe" + ADMIN_KEY.encode(), b"bvo_1_" + b"\x80" * 43):
        answer = await raw_request(
            api,
            b"GET /v1/bots HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
            + key
            + b"\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


async def test_wrong_keys_lock_the_address_out_with_growing_waits_even_for_a_right_key(
    fresh_settings: Callable[..., Settings],
    emulator: RunningEmulator,
) -> None:
    settings = fresh_settings(
        security={"admin_key": ADMIN_KEY, "login_free_failures": 3},
        telegram={"api_base": emulator.base_url},
    )
    async with open_registry(settings) as registry, aiohttp.ClientSession() as session:
        _, alice = await create_owner(registry, "alice")
        app = make_app(Master(settings), registry, AdminContext(registry, settings, session))
        async with TestClient(TestServer(app)) as client:

            async def get(key: str) -> tuple[int, dict[str, str], Any]:
                async with client.get("/v1/bots", headers={"Authorization": f"Bearer {key}"}) as r:
                    return r.status, dict(r.headers), orjson.loads(await r.read())

            for _ in range(3):
                assert (await get("bvo_1_" + "x" * 43))[0] == 401
            assert (await get(alice))[0] == 200  # still free: 3 failures allowed
            assert (await get(ADMIN_KEY + "x"))[0] == 401  # the 4th locks for 1 s
            status, headers, body = await get(ADMIN_KEY)  # a right key is refused while locked
            assert status == 429 and int(headers["Retry-After"]) >= 1
            assert error_of(body)[0] == "locked_out"


def test_an_admin_key_shorter_than_32_characters_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides={"security": {"admin_key": "x"}})
    assert "security.admin_key" in str(caught.value) and "32" in str(caught.value)
    assert caught.value.exit_status == 78


async def test_releasing_a_chat_that_is_not_handed_off_is_404_and_writes_nothing(
    api: Api, redis_url: str
) -> None:
    bot = await api.register(api.alice)
    ctx = api.app[ADMIN_CONTEXT]
    async with open_context_store(api.settings) as store:
        ctx.context = store
        client = aioredis.from_url(redis_url, socket_timeout=10)
        try:
            for chat in (42, -(2**63)):
                status, data = await api.call(
                    "POST", f"/v1/bots/{bot['id']}/chats/{chat}/release", api.alice
                )
                assert status == 404 and error_of(data)[0] == "not_handed_off", data
            keys = [k async for k in client.scan_iter(match=f"{api.settings.redis.prefix}*")]
            assert keys == []
            for chat in (-(2**63) - 1, 2**63, 2**64 - 1):
                status, data = await api.call(
                    "POST", f"/v1/bots/{bot['id']}/chats/{chat}/release", api.alice
                )
                assert status == 404, data
            await store.save(bot["id"], 42, handoff_changes("test"))
            status, data = await api.call(
                "POST", f"/v1/bots/{bot['id']}/chats/42/release", api.alice
            )
            assert status == 200 and data == {"bot_id": bot["id"], "chat_id": 42, "released": True}
        finally:
            ctx.context = None
            await client.aclose()


async def test_the_openapi_document_declares_the_chat_path_parameter(api: Api) -> None:
    status, doc = await api.call("GET", "/v1/openapi.json", None)
    assert status == 200
    op = doc["paths"]["/v1/bots/{id}/chats/{chat}/release"]["post"]
    assert {p["name"] for p in op["parameters"]} == {"id", "chat"}
    assert "429" in op["responses"]
