"""The admin API: owners' isolation, admin key, errors, revision, OpenAPI, and the real
daemon starting a bot registered over HTTP. PostgreSQL, Redis and the Bot API emulator
are real; the app runs in-process (aiohttp's TestServer) except for the daemon test."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from config import Settings
from emulators.telegram.server import RunningEmulator
from ipc import keys
from ipc.messages import Reconcile, decode
from tests.daemon import start_daemon
from tests.e2e.admin_rig import ADMIN_KEY, Api, error_of

pytestmark = pytest.mark.timeout(120)


async def test_an_owner_gets_404_for_another_owners_bot_on_every_endpoint(api: Api) -> None:
    mine = await api.register(api.alice)
    theirs = await api.register(api.bob)
    assert mine["owner_id"] == api.alice_id and theirs["owner_id"] != api.alice_id

    status, data = await api.call("GET", "/v1/bots", api.alice)
    assert status == 200 and [b["id"] for b in data["bots"]] == [mine["id"]]
    one = f"/v1/bots/{theirs['id']}"
    for method, path, body in (
        ("GET", one, None),
        ("PATCH", one, {"settings": {"x": 1}}),
        ("DELETE", one, None),
        ("POST", one + "/pause", None),
        ("POST", one + "/resume", None),
    ):
        status, data = await api.call(method, path, api.alice, body)
        assert status == 404, (method, path, data)
        assert error_of(data) == ("not_found", f"bot {theirs['id']} is not registered")
    # untouched, as the admin sees it
    status, data = await api.call("GET", one, ADMIN_KEY)
    assert status == 200 and data == theirs


async def test_the_admin_sees_and_changes_every_bot_and_may_name_an_owner(api: Api) -> None:
    a = await api.register(api.alice)
    b = await api.register(api.bob)
    own = await api.register(ADMIN_KEY)
    for_alice = await api.register(ADMIN_KEY, owner="alice")
    assert own["owner_id"] is None and for_alice["owner_id"] == api.alice_id
    status, data = await api.call("GET", "/v1/bots", ADMIN_KEY)
    assert status == 200
    assert {x["id"] for x in data["bots"]} == {a["id"], b["id"], own["id"], for_alice["id"]}
    status, data = await api.call("POST", f"/v1/bots/{b['id']}/pause", ADMIN_KEY)
    assert status == 200 and data["state"] == "paused"
    status, _ = await api.call("DELETE", f"/v1/bots/{a['id']}", ADMIN_KEY)
    assert status == 204

    bot = api.emulator.state.create_bots(1)[0]
    status, data = await api.call(
        "POST", "/v1/bots", api.alice, {"token": bot.token, "owner": "bob"}
    )
    assert status == 403 and error_of(data)[0] == "forbidden"
    status, data = await api.call("POST", "/v1/bots", ADMIN_KEY, {"token": bot.token, "owner": "x"})
    assert status == 422 and error_of(data)[0] == "unknown_owner"


async def test_no_key_or_a_bad_key_is_401_on_every_endpoint(api: Api) -> None:
    bot = await api.register(api.alice)
    wrong_secret = f"bvo_{api.alice_id}_" + "A" * 43
    assert wrong_secret != api.alice
    one = f"/v1/bots/{bot['id']}"
    for key in (None, "", "not-a-key", wrong_secret, ADMIN_KEY + "x"):
        for method, path in (
            ("GET", "/v1/bots"),
            ("POST", "/v1/bots"),
            ("GET", one),
            ("PATCH", one),
            ("DELETE", one),
            ("POST", one + "/pause"),
            ("POST", one + "/resume"),
        ):
            headers = {} if key is None else {"Authorization": f"Bearer {key}"}
            async with api.client.request(method, path, headers=headers, data=b"{}") as resp:
                assert resp.status == 401, (key, method, path)
                assert resp.headers["WWW-Authenticate"] == "Bearer"
                code, _ = error_of(await resp.json())
                assert code in {"missing_key", "bad_key"}
    status, data = await api.call("GET", one, api.alice)
    assert status == 200 and data["revision"] == bot["revision"]  # nothing happened


async def test_a_revoked_token_is_refused_with_422_saying_telegram_rejected_it(api: Api) -> None:
    bot = api.emulator.state.create_bots(1)[0]
    api.emulator.state.revoke(bot.id)
    status, data = await api.call("POST", "/v1/bots", api.alice, {"token": bot.token})
    assert status == 422
    code, message = error_of(data)
    assert code == "token_rejected" and "Telegram rejected" in message
    assert bot.token.split(":")[1] not in orjson.dumps(data).decode()
    status, data = await api.call("GET", "/v1/bots", ADMIN_KEY)
    assert data["bots"] == []


async def test_a_bot_registered_twice_is_409_whoever_asks(api: Api) -> None:
    bot = api.emulator.state.create_bots(1)[0]
    assert (await api.call("POST", "/v1/bots", api.alice, {"token": bot.token}))[0] == 201
    for key in (api.alice, api.bob, ADMIN_KEY):
        status, data = await api.call("POST", "/v1/bots", key, {"token": bot.token})
        assert status == 409 and error_of(data) == (
            "already_registered",
            f"bot {bot.id} is already registered",
        )


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({}, "token", "invalid"),
        ({"token": "x", "colour": "red"}, "colour", "invalid"),
        ({"token": "VALID", "settings": [1]}, "settings", "invalid"),
        ({"token": "VALID", "handler": 7}, "handler", "invalid"),
        ({"token": "12:short"}, "token", "invalid_token"),
        ({"token": "VALID", "handler": "nope"}, "handler", "unknown_handler"),
        ([1, 2], "body", "invalid"),
    ],
)
async def test_a_bad_body_is_422_naming_the_field(
    api: Api, body: Any, field: str, code: str
) -> None:
    token = api.emulator.state.create_bots(1)[0].token
    if isinstance(body, dict) and body.get("token") == "VALID":
        body = {**body, "token": token}
    status, data = await api.call("POST", "/v1/bots", api.alice, body)
    assert status == 422, data
    got_code, message = error_of(data)
    assert got_code == code and message.startswith(f"{field}:"), message
    assert token.split(":")[1] not in message


async def test_import_path_handlers_are_the_admins_and_refused_with_the_reason(api: Api) -> None:
    token = api.emulator.state.create_bots(1)[0].token
    body = {"token": token, "handler": "no_such_pkg.mod:router"}
    status, data = await api.call("POST", "/v1/bots", ADMIN_KEY, body)
    assert status == 422 and error_of(data)[0] == "unknown_handler", data
    assert "does not import: ModuleNotFoundError" in error_of(data)[1]
    status, data = await api.call("POST", "/v1/bots", api.alice, body)
    assert status == 403 and "only the admin key" in error_of(data)[1], data


async def test_a_body_that_is_not_json_is_400(api: Api) -> None:
    status, data = await api.call("POST", "/v1/bots", api.alice, raw=b"{token: 1")
    assert status == 400 and error_of(data)[0] == "bad_json"
    bot = await api.register(api.alice)
    status, data = await api.call("PATCH", f"/v1/bots/{bot['id']}", api.alice, raw=b"")
    assert status == 400 and error_of(data)[0] == "bad_json"
    status, data = await api.call("PATCH", f"/v1/bots/{bot['id']}", api.alice, {})
    assert status == 422 and "handler" in error_of(data)[1]


async def test_patch_bumps_the_revision_replaces_settings_and_hints_the_workers(
    api: Api, redis_url: str
) -> None:
    slow, slower = ({"ratelimit": {"per_bot": {"limit": n}}} for n in (10, 5))
    bot = await api.register(api.alice, settings=slow)
    client = aioredis.from_url(redis_url, socket_timeout=10)
    pubsub = client.pubsub()
    await pubsub.subscribe(keys.control_channel(api.settings.redis.prefix))
    try:
        status, data = await api.call(
            "PATCH", f"/v1/bots/{bot['id']}", api.alice, {"settings": slower}
        )
        assert status == 200, data
        assert data["revision"] == bot["revision"] + 1
        assert data["settings"] == slower and data["handler"] == "echo"
        async with asyncio.timeout(5):
            while (msg := await pubsub.get_message(True, timeout=5)) is None:
                pass
        assert decode(msg["data"]) == Reconcile(bots=(bot["id"],))
    finally:
        await pubsub.aclose()
        await client.aclose()
    status, data = await api.call("POST", f"/v1/bots/{bot['id']}/pause", api.alice)
    assert status == 200 and data["state"] == "paused" and data["revision"] == bot["revision"] + 2
    status, data = await api.call("POST", f"/v1/bots/{bot['id']}/resume", api.alice)
    assert status == 200 and data["state"] == "active" and data["revision"] == bot["revision"] + 3


async def test_unknown_paths_and_methods_answer_json_errors(api: Api) -> None:
    status, data = await api.call("GET", "/v1/nothing", ADMIN_KEY)
    assert status == 404 and error_of(data)[0] == "not_found"
    status, data = await api.call("PUT", "/v1/bots", ADMIN_KEY)
    assert status == 405 and error_of(data)[0] == "method_not_allowed"
    status, data = await api.call("GET", "/v1/bots/abc", ADMIN_KEY)
    assert status == 404


# -- the OpenAPI document ------------------------------------------------------------------


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = doc["components"]["schemas"][name]
    return schema


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(
    value: Any, schema: dict[str, Any], doc: dict[str, Any], at: str = "$"
) -> list[str]:
    """The JSON Schema keywords pydantic emits for our models (a subset, checked strictly)."""
    schema = _resolve(schema, doc)
    if "anyOf" in schema:
        options = [schema_errors(value, s, doc, at) for s in schema["anyOf"]]
        return [] if any(not o for o in options) else [f"{at}: matches no anyOf option"]
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](value):
        return [f"{at}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: {value!r} not in {schema['enum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        errors.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{at}: missing {k}" for k in schema.get("required", []) if k not in value]
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], doc, f"{at}.{k}")
            elif extra is False:
                errors.append(f"{at}: unexpected {k}")
            elif isinstance(extra, dict):
                errors += schema_errors(v, extra, doc, f"{at}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errors += schema_errors(v, schema["items"], doc, f"{at}[{i}]")
    return errors


async def test_the_openapi_document_lists_exactly_the_routes_and_describes_the_answers(
    api: Api,
) -> None:
    status, doc = await api.call("GET", "/v1/openapi.json", None)
    assert status == 200 and doc["openapi"].startswith("3.1")
    served = {
        (r.resource.canonical, r.method.lower())
        for r in api.app.router.routes()
        if r.method != "HEAD"
        and r.resource is not None
        # the dashboard's HTML pages are not part of the API (supervisor/http/dashboard/)
        and not (r.resource.canonical + "/").startswith("/ui/")
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented

    async def check(method: str, path: str, key: str | None, body: Any = None) -> Any:
        status, data = await api.call(method, path, key, body)
        template = re.sub(r"/\d+", "/{id}", path)
        reply = doc["paths"][template][method.lower()]["responses"][str(status)]
        if data is not None:
            schema = reply["content"]["application/json"]["schema"]
            assert schema_errors(data, schema, doc) == [], (method, path, status, data)
        return data

    bot = api.emulator.state.create_bots(1)[0]
    created = await check(
        "POST", "/v1/bots", api.alice, {"token": bot.token, "settings": {"ratelimit": {}}}
    )
    one = f"/v1/bots/{created['id']}"
    await check("GET", "/v1/bots", api.alice)
    await check("GET", one, api.alice)
    await check("PATCH", one, api.alice, {"handler": "echo"})
    await check("POST", one + "/pause", api.alice)
    await check("GET", one, api.bob)  # 404
    await check("POST", "/v1/bots", api.alice, {"token": bot.token})  # 409
    await check("POST", "/v1/bots", api.alice, {"tokn": 1})  # 422
    await check("GET", "/v1/bots", None)  # 401
    await check("GET", "/v1/status", None)
    await check("GET", "/healthz", None)
    await check("DELETE", one, api.alice)  # 204, no body


# -- the real daemon -------------------------------------------------------------------------


async def test_a_bot_registered_over_http_polls_within_a_second(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(security={"admin_key": ADMIN_KEY}, workers={"count": 2})
    async with start_daemon(settings, emulator.base_url, tmp_path) as daemon:
        for _ in range(3):  # the first and later registrations alike
            bot = emulator.state.create_bots(1)[0]
            t0 = time.perf_counter()
            async with daemon.session.post(
                daemon.http + "/v1/bots",
                json={"token": bot.token},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                assert resp.status == 201, await resp.text()
            answered = time.perf_counter() - t0
            async with asyncio.timeout(1.0):
                await emulator.state.wait_polling(bot.id)
            polling = time.perf_counter() - t0
            print(
                f"bot {bot.id}: 201 after {answered * 1000:.1f} ms, polling after "
                f"{polling * 1000:.1f} ms"
            )
        assert ADMIN_KEY not in daemon.log_text() and bot.token not in daemon.log_text()
