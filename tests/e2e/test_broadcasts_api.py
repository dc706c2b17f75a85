"""/v1/bots/{id}/broadcasts over the in-process admin API: create, dry run, progress,
cancel, validation, and owner isolation (another owner's bot or broadcast is the same
404 as one that does not exist)."""

from __future__ import annotations

from supervisor.http.common import ADMIN_KEY as ADMIN_CONTEXT
from tests.e2e.admin_rig import ADMIN_KEY, Api, error_of


async def _seed(api: Api, bot_id: int, n: int, blocked: int = 0) -> None:
    pool = api.app[ADMIN_CONTEXT].registry.pool
    await pool.execute(
        "INSERT INTO chats (bot_id, chat_id, blocked) "
        "SELECT $1, g, g <= $3 FROM generate_series(1, $2) g",
        bot_id,
        n,
        blocked,
    )


async def test_dry_run_create_progress_and_cancel(api: Api) -> None:
    bot = await api.register(api.alice)
    await _seed(api, bot["id"], 28, blocked=3)
    path = f"/v1/bots/{bot['id']}/broadcasts"
    status, data = await api.call("POST", path, api.alice, {"text": "hi", "dry_run": True})
    assert (status, data) == (200, {"bot_id": bot["id"], "dry_run": True, "audience": 25})
    status, data = await api.call("GET", path, api.alice)
    assert (status, data) == (200, {"broadcasts": []})  # a dry run creates nothing
    body = {
        "text": "<b>sale</b>",
        "parse_mode": "HTML",
        "buttons": [[{"text": "Shop", "url": "https://example.com/shop"}]],
    }
    status, created = await api.call("POST", path, api.alice, body)
    assert status == 201, created
    assert created["state"] == "pending"
    assert (created["total"], created["sent"], created["remaining"]) == (25, 0, 25)
    one = f"{path}/{created['id']}"
    status, got = await api.call("GET", one, api.alice)
    assert status == 200 and got["id"] == created["id"] and got["eta_s"] is None
    status, cancelled = await api.call("POST", one + "/cancel", api.alice)
    assert status == 200 and cancelled["state"] == "cancelled" and cancelled["remaining"] == 0
    status, again = await api.call("DELETE", one, ADMIN_KEY)  # the admin sees every bot's
    assert status == 200 and again["state"] == "cancelled"
    status, listed = await api.call("GET", path, api.alice)
    assert [b["id"] for b in listed["broadcasts"]] == [created["id"]]


async def test_isolation_between_owners_and_bad_requests_name_the_field(api: Api) -> None:
    """Another owner's bot or broadcast is the same 404 as an unknown one."""
    alices = await api.register(api.alice)
    bobs = await api.register(api.bob)
    status, created = await api.call(
        "POST", f"/v1/bots/{alices['id']}/broadcasts", api.alice, {"text": "x"}
    )
    assert status == 201
    mine = f"/v1/bots/{alices['id']}/broadcasts"
    unknown = 1_234_567
    for method, path, body in (
        ("POST", mine, {"text": "x"}),
        ("GET", mine, None),
        ("GET", f"{mine}/{created['id']}", None),
        ("DELETE", f"{mine}/{created['id']}", None),
    ):
        status, data = await api.call(method, path, api.bob, body)
        code, message = error_of(data)
        status_u, data_u = await api.call(
            method, path.replace(str(alices["id"]), str(unknown)), api.bob, body
        )
        assert status == status_u == 404 and code == "not_found"
        assert message == error_of(data_u)[1].replace(str(unknown), str(alices["id"]))
    # Alice's broadcast id under Bob's own bot is unknown too
    status, data = await api.call(
        "GET", f"/v1/bots/{bobs['id']}/broadcasts/{created['id']}", api.bob
    )
    assert status == 404 and error_of(data)[0] == "not_found"
    # bad requests name the field
    for body, field in (
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "x" * 4097}, "text"),
        ({"text": "x", "parse_mode": "RTF"}, "parse_mode"),
        ({"text": "x", "buttons": [[{"text": "a"}]]}, "url"),
        ({"text": "x", "buttons": [[{"text": "a", "url": "javascript:alert(1)"}]]}, "url"),
        ({"text": "x", "colour": "red"}, "colour"),
    ):
        status, data = await api.call("POST", mine, api.alice, body)
        code, message = error_of(data)
        assert (status, code) == (422, "invalid") and field in message, (body, message)
