"""The dashboard over plain HTTP (aiohttp's client, no browser): sessions, CSRF, owner
isolation, lockout, forms. PostgreSQL, Redis and the Bot API emulator are real; the
master's app runs in-process."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from context import handoff_changes
from supervisor.registry.bot_records import BotState
from tests.e2e.dashboard_rig import ADMIN_KEY, Rig, csrf_of, emulator, rig_factory

__all__ = ["emulator", "rig_factory"]  # fixtures
pytestmark = pytest.mark.timeout(60)


def _bot_id(location: str) -> int:
    match = re.fullmatch(r"/ui/bots/(\d+)\?done=added", location)
    assert match, location
    return int(match.group(1))


async def test_login_trades_the_key_for_a_strict_httponly_cookie_that_logout_makes_worthless(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory()
    alice = rig.browser()
    status, page, resp = await alice.request("GET", "/ui/bots")
    assert status == 303 and resp.headers["Location"].startswith("/ui/login?next=")
    status, where = await alice.login(rig.alice)
    assert (status, where) == (303, "/ui/bots")
    (session_cookie,) = [c for c in alice.last_set_cookie if c.startswith("bv_session=")]
    attrs = {a.strip().lower() for a in session_cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attrs
    assert "secure" not in attrs  # plain HTTP here; `auto` marks it Secure over TLS
    status, page, resp = await alice.request("GET", "/ui/bots")
    assert status == 200 and "Your bots" in page and "alice" in page
    assert rig.alice not in page and rig.alice not in str(alice.cookies)
    headers = resp.headers
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert "<script>" not in page and " style=" not in page  # nothing inline for the CSP

    # logout
    stolen = dict(alice.cookies)
    status, _, resp = await alice.request("POST", "/ui/logout", {"_csrf": await alice.csrf()})
    assert status == 303 and resp.headers["Location"] == "/ui/login"
    assert "bv_session" not in alice.cookies
    replay = rig.browser()
    replay.cookies = stolen  # the cookie of a logged-out session is worth nothing
    status, _, resp = await replay.request("GET", "/ui/bots")
    assert status == 303 and resp.headers["Location"].startswith("/ui/login")
    status, page, _ = await replay.request("GET", "/ui/live/bots?ids=1")
    assert status == 401


async def test_every_form_without_its_csrf_token_is_refused_with_403(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory()
    alice = rig.browser()
    _, login_page, _ = await alice.request("GET", "/ui/login")
    status, page, _ = await alice.request("POST", "/ui/login", {"key": rig.alice})
    assert status == 403 and "CSRF" in page
    status, _, _ = await alice.request("POST", "/ui/login", {"key": rig.alice, "_csrf": "x"})
    assert status == 403
    status, _ = await alice.login(rig.alice)
    assert status == 303
    status, where = await rig.add_bot(alice)
    bot_id = _bot_id(where)
    token = rig.emulator.state.create_bots(1)[0].token
    for path, form in (
        (f"/ui/bots/{bot_id}/pause", {}),
        (f"/ui/bots/{bot_id}/remove", {"_csrf": ""}),
        (f"/ui/bots/{bot_id}/settings", {"settings": "{}", "_csrf": csrf_of(login_page)}),
        ("/ui/bots/new", {"token": token}),
        ("/ui/logout", {}),
    ):
        status, page, _ = await alice.request("POST", path, form)
        assert status == 403 and "CSRF" in page, (path, status)
    record = await rig.registry.get(bot_id)
    assert record is not None and record.state is BotState.ACTIVE and record.revision == 1
    assert await rig.registry.get(int(token.split(":")[0])) is None


async def test_another_owners_bot_is_the_same_404_as_a_bot_that_does_not_exist(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory()
    alice, bob = rig.browser(), rig.browser()
    await alice.login(rig.alice)
    await bob.login(rig.bob)
    _, where = await rig.add_bot(bob)
    theirs = _bot_id(where)
    unknown = theirs + 1_000_000
    token = await alice.csrf()
    for path in ("/ui/bots/{}", "/ui/live/bots/{}"):
        s1, p1, _ = await alice.request("GET", path.format(theirs))
        s2, p2, _ = await alice.request("GET", path.format(unknown))
        assert s1 == s2 == 404
        assert p1.replace(str(theirs), "N") == p2.replace(str(unknown), "N")
    for action in ("pause", "remove", "settings", "chats/5/release"):
        form = {"_csrf": token, "settings": '{"x": 1}'}
        s1, p1, _ = await alice.request("POST", f"/ui/bots/{theirs}/{action}", form)
        s2, p2, _ = await alice.request("POST", f"/ui/bots/{unknown}/{action}", form)
        assert s1 == s2 == 404, action
        assert p1.replace(str(theirs), "N") == p2.replace(str(unknown), "N")
    status, body, _ = await alice.request("GET", f"/ui/live/bots?ids={theirs}")
    assert status == 200 and '"bots":[]' in body.replace(" ", "")
    status, page, _ = await alice.request("GET", f"/ui/bots?q={theirs}")
    assert status == 200 and f"/ui/bots/{theirs}" not in page
    status, _, _ = await alice.request("GET", "/ui/fleet")
    assert status == 404  # the admin's page
    record = await rig.registry.get(theirs)
    assert record is not None and record.state is BotState.ACTIVE and record.revision == 1
    admin = rig.browser()
    await admin.login(ADMIN_KEY)
    status, page, _ = await admin.request("GET", f"/ui/bots/{theirs}")
    assert status == 200 and f"Bot {theirs}" in page or "@" in page
    status, page, _ = await admin.request("GET", "/ui/fleet")
    assert status == 200 and "Workers" in page and "bob" in page


async def test_failed_logins_lock_the_address_out_like_the_api(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory(security={"admin_key": ADMIN_KEY, "login_free_failures": 2})
    browser = rig.browser()
    for _ in range(2):
        status, page = await browser.login("bvo_1_" + "A" * 43)
        assert status == 401 and "not an owner" in page
    status, page = await browser.login("wrong")  # the third failure locks the address
    assert status == 401
    status, page = await browser.login(rig.alice)  # a right key too, while locked
    assert status == 429 and "try again in" in page
    # the API shares the count: the same address is locked there as well
    async with rig.client.get("/v1/bots", headers={"Authorization": f"Bearer {rig.alice}"}) as resp:
        assert resp.status == 429


async def test_adding_and_editing_a_bot_shows_errors_next_to_the_field_and_never_the_token(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory()
    alice = rig.browser()
    await alice.login(rig.alice)
    bad = "123456:" + "x" * 35  # the right shape, unknown to Telegram
    status, page = await rig.add_bot(alice, token=bad, settings='{"greeting": ')
    assert status == 422 and 'id="settings-error"' in page and "not valid JSON" in page
    status, page = await rig.add_bot(alice, token=bad)
    assert status == 422 and 'id="token-error"' in page and "rejected" in page
    assert bad not in page and "x" * 35 not in page
    status, page = await rig.add_bot(alice, handler="no_such_handler")
    assert status == 422 and 'id="handler-error"' in page
    status, where = await rig.add_bot(alice)
    bot_id = _bot_id(where)
    token = await alice.csrf(f"/ui/bots/{bot_id}")
    form = {"_csrf": token, "handler": "echo", "settings": '{"ratelimit": {"per_chat": -1}}'}
    status, page, _ = await alice.request("POST", f"/ui/bots/{bot_id}/settings", form)
    assert status == 422 and 'id="settings-error"' in page and "ratelimit" in page
    form["settings"] = '{"ratelimit": {"per_bot": {"limit": 10}}}'
    status, _, resp = await alice.request("POST", f"/ui/bots/{bot_id}/settings", form)
    assert status == 303
    record = await rig.registry.get(bot_id)
    assert record is not None and record.settings == {"ratelimit": {"per_bot": {"limit": 10}}}
    for action, state in (("pause", BotState.PAUSED), ("resume", BotState.ACTIVE)):
        status, _, _ = await alice.request("POST", f"/ui/bots/{bot_id}/{action}", {"_csrf": token})
        assert status == 303
        record = await rig.registry.get(bot_id)
        assert record is not None and record.state is state
    status, _, _ = await alice.request("POST", f"/ui/bots/{bot_id}/remove", {"_csrf": token})
    assert status == 303 and await rig.registry.get(bot_id) is None


async def test_the_bots_list_pages_and_searches_only_the_owners_bots_over_secure_cookies(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory(dashboard={"page_size": 5, "secure_cookies": "always"})
    alice, bob = rig.browser(), rig.browser()
    await alice.login(rig.alice)
    (cookie,) = [c for c in alice.last_set_cookie if c.startswith("bv_session=")]
    assert "secure" in {a.strip().lower() for a in cookie.split(";")}  # behind a TLS proxy
    await bob.login(rig.bob)
    mine = [_bot_id((await rig.add_bot(alice))[1]) for _ in range(6)]
    _, where = await rig.add_bot(bob)
    status, page, _ = await alice.request("GET", "/ui/bots")
    assert status == 200 and "6 bots" in page and "page 1 of 2" in page
    assert all(f'data-bot-id="{b}"' in page for b in sorted(mine)[:5])
    status, page, _ = await alice.request("GET", "/ui/bots?page=2")
    assert f'data-bot-id="{sorted(mine)[5]}"' in page and 'rel="prev"' in page
    record = await rig.registry.get(mine[3])
    assert record is not None and record.username
    status, page, _ = await alice.request("GET", f"/ui/bots?q={record.username[2:]}")
    assert "1 bot " in page and f'data-bot-id="{mine[3]}"' in page
    status, page, _ = await alice.request("GET", "/ui/bots?page=99")
    assert status == 200 and "6 bots" in page and "data-bot-id" not in page


async def test_a_chat_under_operator_handoff_is_listed_and_released_from_the_bot_page(
    rig_factory: Callable[..., Any],
) -> None:
    rig: Rig = await rig_factory()
    alice = rig.browser()
    await alice.login(rig.alice)
    bot_id = _bot_id((await rig.add_bot(alice))[1])
    await rig.context.save(bot_id, 4242, handoff_changes("user asked for a human"))
    assert await rig.context.wait_durable(5.0)
    status, page, _ = await alice.request("GET", f"/ui/bots/{bot_id}")
    assert status == 200 and "4242" in page and "user asked for a human" in page
    form = {"_csrf": csrf_of(page)}
    status, _, resp = await alice.request("POST", f"/ui/bots/{bot_id}/chats/4242/release", form)
    assert status == 303 and resp.headers["Location"].endswith("done=released")
    assert await rig.context.wait_durable(5.0)
    status, page, _ = await alice.request("GET", f"/ui/bots/{bot_id}")
    assert "4242" not in page and "the bot answers every chat" in page
