"""The dashboard's broadcast pages, audit log page and quota usage over plain HTTP
(aiohttp's client, no browser): validation next to the field, CSRF, owner isolation,
audit rows for dashboard actions. PostgreSQL, Redis and the emulator are real; no worker
runs, so a started broadcast stays pending (the browser test watches one finish)."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ipc.usage import Usage, utc_day
from supervisor.http.common import AdminContext
from supervisor.http.dashboard.quota_usage import quota_usage
from supervisor.registry.broadcast_records import BroadcastState
from supervisor.registry.broadcasts import BroadcastStore
from supervisor.registry.owners import ADMIN, Caller
from supervisor.registry.quotas import QuotaStore
from tests.e2e.dashboard_rig import ADMIN_KEY, Rig, csrf_of, emulator, rig_factory

__all__ = ["emulator", "rig_factory"]  # fixtures
pytestmark = pytest.mark.timeout(60)


async def _bot_with_chats(rig: Rig, browser: Any, chats: int) -> tuple[int, str]:
    """A bot added through the form (id, token), with `chats` rows in its audience."""
    token = rig.emulator.state.create_bots(1)[0].token
    status, where = await rig.add_bot(browser, token=token)
    match = re.fullmatch(r"/ui/bots/(\d+)\?done=added", where)
    assert status == 303 and match, where
    bot_id = int(match.group(1))
    await rig.registry.pool.execute(
        "INSERT INTO chats (bot_id, chat_id) SELECT $1, g FROM generate_series(1, $2) g",
        bot_id,
        chats,
    )
    return bot_id, token


async def test_the_broadcast_form_validates_next_to_the_field_dry_runs_starts_and_cancels(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory()
    alice = rig.browser()
    await alice.login(rig.alice)
    bot_id, token = await _bot_with_chats(rig, alice, 3)
    base = f"/ui/bots/{bot_id}/broadcasts"
    status, page, _ = await alice.request("GET", f"/ui/bots/{bot_id}")
    assert status == 200 and f'href="{base}"' in page
    status, page, _ = await alice.request("GET", base)
    assert status == 200 and "None yet." in page
    csrf = csrf_of(page)

    status, page, _ = await alice.request("POST", base, {"text": "hi"})
    assert status == 403 and "CSRF" in page
    for form, field, words in (
        ({"text": ""}, "text", "text: String should have at least 1 character"),
        ({"text": "x" * 4097}, "text", "at most 4096"),
        ({"text": "hi", "parse_mode": "BBCode"}, "parse_mode", "parse mode: choose"),
        ({"text": "hi", "buttons": "just a label"}, "buttons", "line 1: write it as"),
        ({"text": "hi", "buttons": "Site | ftp://x"}, "buttons", "buttons (line 1)"),
    ):
        status, page, _ = await alice.request("POST", base, {"_csrf": csrf, **form})
        assert status == 422, form
        error = re.search(rf'<p id="{field}-error" class="error">([^<]*)</p>', page)
        assert error and words in unescape(error.group(1)), (form, page[-3000:])
        assert 'aria-invalid="true"' in page
        if form["text"] == "hi":
            assert ">hi</textarea>" in page  # what was typed stays in the form

    form = {"_csrf": csrf, "text": "<b>News</b>", "parse_mode": "HTML"}
    form["buttons"] = "Our site | https://example.org/a?b=1"
    for dry in ({"dry_run": "1"}, {}):  # without the Start button: only a dry run
        status, page, _ = await alice.request("POST", base, {**form, **dry})
        assert status == 200 and "would go to 3 chats" in page and "Nothing was sent" in page
    assert await BroadcastStore(rig.registry.pool).recent(bot_id) == []

    status, _, resp = await alice.request("POST", base, {**form, "start": "1"})
    assert status == 303
    where = resp.headers["Location"]
    broadcast_id = int(where.rsplit("/", 1)[1])
    (record,) = await BroadcastStore(rig.registry.pool).recent(bot_id)
    assert record.id == broadcast_id and record.total == 3 and record.parse_mode == "HTML"
    assert record.reply_markup == {
        "inline_keyboard": [[{"text": "Our site", "url": "https://example.org/a?b=1"}]]
    }
    status, page, _ = await alice.request("GET", where)
    assert status == 200 and 'data-field="state">pending' in page
    live_path = where.replace("/ui/", "/ui/live/", 1)
    assert f'data-live-broadcast="{live_path}"' in page and "Cancel the broadcast" in page
    status, body, resp = await alice.request("GET", live_path)
    assert status == 200 and resp.content_type == "application/json"
    live = await resp.json()
    assert (live["state"], live["remaining"], live["total"], live["active"]) == (
        "pending",
        3,
        3,
        True,
    )
    for listing in (base, f"/ui/bots/{bot_id}"):  # its page, and the bot's own page
        status, page, _ = await alice.request("GET", listing)
        assert f'href="{where}"' in page, listing

    status, _, resp = await alice.request("POST", where + "/cancel", {})
    assert status == 403
    status, _, resp = await alice.request("POST", where + "/cancel", {"_csrf": csrf})
    assert status == 303 and resp.headers["Location"] == where + "?done=cancelled"
    status, page, _ = await alice.request("GET", where)
    assert 'data-field="state">cancelled' in page and "data-while-active hidden" in page
    (record,) = await BroadcastStore(rig.registry.pool).recent(bot_id)
    assert record.state is BroadcastState.CANCELLED

    # both are in the audit log, from the dashboard, with counts and never the text
    await rig.audit.flush()
    rows = await rig.audit.query(owner_id=rig.alice_id, action="broadcast.")
    assert [(r.action, r.target, r.source, r.actor) for r in rows] == [
        (
            a,
            f"bot:{bot_id}/broadcast:{broadcast_id}",
            "dashboard:127.0.0.1",
            f"owner:{rig.alice_id}",
        )
        for a in ("broadcast.cancel", "broadcast.start")
    ]
    assert rows[1].detail == {"total": 3, "parse_mode": "HTML", "buttons": 1}
    assert "News" not in str([r.public() for r in rows])


async def test_another_owners_broadcasts_are_the_same_404_as_ones_that_do_not_exist(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory()
    alice, bob = rig.browser(), rig.browser()
    await alice.login(rig.alice)
    await bob.login(rig.bob)
    bot_id, _ = await _bot_with_chats(rig, alice, 2)
    csrf = await alice.csrf(f"/ui/bots/{bot_id}/broadcasts")
    _, _, resp = await alice.request(
        "POST", f"/ui/bots/{bot_id}/broadcasts", {"_csrf": csrf, "text": "x", "start": "1"}
    )
    theirs = resp.headers["Location"]  # /ui/bots/<bot>/broadcasts/<id>
    unknown_bot = theirs.replace(str(bot_id), str(bot_id + 1_000_000), 1)
    unknown_broadcast = theirs + "0000"
    token = await bob.csrf()

    def same(a: str, b: str) -> str:
        return re.sub(r"\d{4,}", "N", a) if a else b

    for method, suffix, form in (
        ("GET", "", None),
        ("POST", "/cancel", {"_csrf": token}),
    ):
        pages = []
        for path in (theirs, unknown_bot):
            status, page, _ = await bob.request(method, path + suffix, form)
            assert status == 404, (path, suffix)
            pages.append(same(page, ""))
        assert pages[0] == pages[1]
        status, _, _ = await alice.request(
            method, unknown_broadcast + suffix, form and {"_csrf": csrf}
        )
        assert status == 404
    beyond = theirs.rsplit("/", 1)[0] + "/9999999999999999999"  # past int64: not found
    status, page, _ = await alice.request("GET", beyond)
    assert status == 404 and "broadcast 9999999999999999999 of bot" in page
    for path in (f"/ui/bots/{bot_id}/broadcasts", theirs.replace("/ui/", "/ui/live/", 1)):
        status, _, _ = await bob.request("GET", path)
        assert status == 404, path
    status, _, _ = await bob.request(
        "POST", f"/ui/bots/{bot_id}/broadcasts", {"_csrf": token, "text": "x", "start": "1"}
    )
    assert status == 404
    (record,) = await BroadcastStore(rig.registry.pool).recent(bot_id)
    assert record.state is BroadcastState.PENDING  # bob's cancel changed nothing
    admin = rig.browser()
    await admin.login(ADMIN_KEY)
    status, page, _ = await admin.request("GET", theirs)
    assert status == 200 and "pending" in page


async def test_the_audit_page_shows_owners_their_rows_and_the_admin_all_filtered_and_paged(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory(dashboard={"page_size": 5}, quotas={"bots": 4})
    alice, bob, stranger = rig.browser(), rig.browser(), rig.browser()
    status, _ = await stranger.login("bvo_1_" + "A" * 43)
    assert status == 401
    await alice.login(rig.alice)
    await bob.login(rig.bob)
    bot_id, token = await _bot_with_chats(rig, alice, 1)
    csrf = await alice.csrf()
    for action in ("pause", "resume", "pause"):
        status, _, _ = await alice.request("POST", f"/ui/bots/{bot_id}/{action}", {"_csrf": csrf})
        assert status == 303
    status, _, _ = await alice.request(
        "POST", f"/ui/bots/{bot_id}/settings", {"_csrf": csrf, "settings": '{"x": "secret"}'}
    )
    await alice.request("POST", f"/ui/bots/{bot_id}/chats/9/release", {"_csrf": csrf})
    await bob.request("POST", "/ui/logout", {"_csrf": await bob.csrf()})

    # the owner's bots page shows its quota usage
    status, page, _ = await alice.request("GET", "/ui/bots")
    assert status == 200 and "Your quota" in page
    assert re.search(r'data-quota="Bots">1 of 4 <meter[^>]*value="25"', page), page
    assert 'data-quota="Messages today">0 of unlimited' in page

    status, page, _ = await alice.request("GET", "/ui/audit")
    assert status == 200
    actions = re.findall(r'<tr data-action="([^"]+)"', page)
    assert actions == ["chat.release", "bot.update", "bot.pause", "bot.resume", "bot.pause"]
    assert "dashboard:127.0.0.1" in page and "unknown" not in page and "bob" not in page
    older = re.search(r'href="(/ui/audit\?before=\d+)" rel="next"', page)
    assert older, page[-2000:]
    status, page, _ = await alice.request("GET", unescape(older.group(1)))
    assert re.findall(r'<tr data-action="([^"]+)"', page) == ["bot.register", "dashboard.login"]
    status, page, _ = await alice.request("GET", "/ui/audit?action=bot.pause&since=1h")
    assert re.findall(r'<tr data-action="([^"]+)"', page) == ["bot.pause", "bot.pause"]
    status, page, _ = await alice.request("GET", "/ui/audit?since=last+tuesday")
    assert status == 422 and 'id="since-error"' in page and "neither a duration" in page

    admin = rig.browser()
    await admin.login(ADMIN_KEY)
    status, page, _ = await admin.request("GET", "/ui/audit?action=dashboard.")
    rows = re.findall(
        r'<tr data-action="(dashboard\.[a-z]+)">.*?<td data-label="Outcome">(\w+)', page, re.S
    )
    assert rows == [
        ("dashboard.login", "ok"),  # the admin
        ("dashboard.logout", "ok"),  # bob
        ("dashboard.login", "ok"),  # bob
        ("dashboard.login", "ok"),  # alice
        ("dashboard.login", "bad_key"),  # the stranger: actor unknown
    ], rows
    status, page, _ = await admin.request("GET", "/ui/bots")
    assert "Your quota" not in page  # the admin has none

    # never a key, a token or a setting's value in a row
    await rig.audit.flush()
    dump = str([r.public() for r in await rig.audit.query(limit=1000)])
    for secret in (token, rig.alice, rig.bob, ADMIN_KEY, "A" * 43, "secret"):
        assert secret not in dump


async def test_quota_usage_falls_back_to_postgresql_when_redis_does_not_answer(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory(quotas={"messages_per_day": 100})
    store = QuotaStore(rig.registry.pool)
    await store.store_usage(utc_day(), {rig.alice_id: Usage(messages=42)})
    # nothing listens there; no retries, so the test does not wait out a backoff
    away = aioredis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    ctx = AdminContext(rig.registry, rig.settings, rig.client.session, None, away)
    try:
        usage = await quota_usage(ctx, Caller(owner_id=rig.alice_id, admin=False))
    finally:
        await away.aclose()
    assert usage is not None
    assert [(u.name, u.used, u.limit, u.percent) for u in usage[1]][1] == (
        "Messages today",
        42,
        100,
        42,
    )
    assert await quota_usage(ctx, ADMIN) is None
