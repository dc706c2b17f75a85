"""The dashboard in a real browser: headless Chromium (Debian's packages) driven by
Selenium against the real daemon (`botvisor run`, one worker) and the Bot API emulator.

Log in, add a bot, watch it run and count its messages (live figures from the workers'
heartbeats), dry-run and start a broadcast to a handful of chats and watch it finish in
the page (live, no reload), pause the bot, try another owner's bot (404), submit a form
stripped of its CSRF token (403), see those actions on the audit page, check the list at
375 px, and the admin's fleet page with the real worker. Screenshots go to the test's tmp dir
(`<tmp>/screenshots/*.png`). Without chromium this test fails when CI=true and is
skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import RunningEmulator
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry
from tests.daemon import start_daemon
from tests.e2e.dashboard_rig import emulator

__all__ = ["emulator"]  # fixture
pytestmark = pytest.mark.timeout(90)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ADMIN_KEY = "admin-" + secrets.token_urlsafe(32)
WAIT_S = 15.0


def _chromium_or_skip() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    reason = f"{' and '.join(missing)} missing: apt-get install -y chromium chromium-driver"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    _chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(WAIT_S)
    try:
        yield browser
    finally:
        browser.quit()


class Steps:
    """Selenium calls (blocking) made in a thread, so the emulator in this loop runs."""

    def __init__(self, driver: Any, base: str, shots: Path) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.base, self.shots, self.by = driver, base, shots, By
        self.wait = WebDriverWait(driver, WAIT_S)
        shots.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.d.save_screenshot(str(self.shots / f"{name}.png"))

    def open(self, path: str) -> None:
        self.d.get(self.base + path)

    def text(self, css: str) -> str:
        return str(self.d.find_element(self.by.CSS_SELECTOR, css).text)

    def type_and_submit(self, fields: dict[str, str]) -> None:
        element = None
        for name, value in fields.items():
            element = self.d.find_element(self.by.NAME, name)
            element.clear()
            element.send_keys(value)
        assert element is not None
        with self.navigation():
            element.submit()

    def wait_text(self, css: str, predicate: Callable[[str], bool]) -> str:
        def ready(d: Any) -> str | bool:
            els = d.find_elements(self.by.CSS_SELECTOR, css)
            return els[0].text if els and predicate(els[0].text) else False

        return str(self.wait.until(ready))

    def wait_url(self, predicate: Callable[[str], bool]) -> str:
        """The URL once it satisfies `predicate`: a click or submit may return before the
        browser has navigated."""
        return str(self.wait.until(lambda d: d.current_url if predicate(d.current_url) else False))

    def click(self, css: str) -> None:
        """Click something that loads a page (every click here does)."""
        with self.navigation():
            self.d.find_element(self.by.CSS_SELECTOR, css).click()

    @contextlib.contextmanager
    def navigation(self) -> Iterator[None]:
        """Return only once the page the action leads to has replaced this one: a click
        or submit may return before the browser has navigated."""
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

        old = self.d.find_element(self.by.TAG_NAME, "html")

        def replaced(_: Any) -> bool:
            try:
                old.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as exc:
                # ChromeDriver 156 may say this instead of "stale element" for a node of
                # the page just replaced (seen in a full-suite run)
                if "does not belong to the document" in str(exc):
                    return True
                raise
            return False

        yield
        self.wait.until(replaced)
        self.wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


async def _owners_and_a_bot_of_bob(
    settings: Settings, emulator: RunningEmulator
) -> tuple[str, int]:
    """alice's key, and the id of a bot of bob's (registered straight in the registry)."""
    async with open_registry(settings) as registry:
        _, alice = await create_owner(registry, "alice")
        bob, _ = await create_owner(registry, "bob")
        bot = emulator.state.create_bots(1)[0]
        record = await registry.add(BotToken(bot.token), username="bob_bot", owner_id=bob.id)
    return alice, record.id


async def test_an_owner_adds_watches_and_pauses_a_bot_in_a_real_browser(
    fresh_settings: Callable[..., Settings],
    emulator: RunningEmulator,
    driver: Any,
    tmp_path: Path,
) -> None:
    settings = fresh_settings(
        security={"admin_key": ADMIN_KEY},
        workers={"count": 1},
        dashboard={"secure_cookies": "never", "poll_interval_s": 0.5},
        broadcasts={"scan_interval_s": 0.2},
    )
    alice, bobs_bot = await _owners_and_a_bot_of_bob(settings, emulator)
    async with start_daemon(
        settings, emulator.base_url, tmp_path, expect_warnings=("dashboard.csrf_rejected",)
    ) as daemon:
        from selenium.webdriver.common.by import By

        ui = Steps(driver, daemon.http, tmp_path / "screenshots")
        run = asyncio.to_thread

        # log in: the key goes in a password field and comes back nowhere
        await run(ui.open, "/ui/bots")
        assert "/ui/login" in driver.current_url
        await run(ui.type_and_submit, {"key": alice})
        assert await run(ui.text, "h1") == "Your bots"
        cookies = {c["name"]: c for c in driver.get_cookies()}
        assert cookies["bv_session"]["httpOnly"] and cookies["bv_session"]["sameSite"] == "Strict"
        assert alice not in driver.page_source
        await run(ui.shot, "1-logged-in")

        # add a bot; it runs, and a message to it shows in its live figures
        new = emulator.state.create_bots(1)[0]
        await run(ui.open, "/ui/bots/new")
        await run(ui.type_and_submit, {"token": new.token})
        await run(ui.wait_url, lambda u: u.endswith(f"/ui/bots/{new.id}?done=added"))
        assert new.token not in driver.page_source
        await emulator.state.wait_polling(new.id)
        await run(ui.wait_text, "[data-field=state_text]", lambda t: t == "running")
        emulator.state.inject([{"bot_id": new.id, "chat_id": 77, "text": "hello"}])
        await run(ui.wait_text, "[data-field=in_per_min]", lambda t: float(t or 0) >= 1)
        await run(ui.wait_text, "[data-field=out_per_min]", lambda t: float(t or 0) >= 1)
        await run(ui.shot, "2-running")

        # a broadcast to the bot's chats: a dry run counts them, then it is sent and its
        # progress page follows it to the end without a reload
        chats = [77, *emulator.state.create_chats(new.id, 5, first_id=1001)]
        async with open_registry(settings) as registry:
            await registry.pool.execute(
                "INSERT INTO chats (bot_id, chat_id) SELECT $1, unnest($2::bigint[])"
                " ON CONFLICT DO NOTHING",
                new.id,
                chats,
            )
        await run(ui.click, "#broadcasts-link")
        await run(ui.type_and_submit, {"text": "Hello from the dashboard"})  # no Start: dry run
        await run(ui.wait_text, "#audience", lambda t: "would go to 6 chats" in t)
        await run(ui.shot, "3-broadcast-dry-run")
        await run(ui.click, "button[name=start]")
        await run(ui.wait_text, "h1", lambda t: t.startswith("Broadcast #"))
        driver.execute_script("window.stillThisPage = true")
        await run(ui.wait_text, "[data-field=state]", lambda t: t == "done")
        assert await run(ui.text, "[data-field=sent]") == "6"
        assert await run(ui.text, "[data-field=remaining]") == "0"
        assert driver.execute_script("return window.stillThisPage") is True  # polled, not reloaded
        assert not driver.find_element(By.CSS_SELECTOR, "form[data-while-active]").is_displayed()
        log = emulator.state.sent_log(new.id) or []
        sent = [m for m in log if m["text"] == "Hello from the dashboard"]
        assert sorted(m["chat_id"] for m in sent) == sorted(chats)
        await run(ui.shot, "4-broadcast-done")

        # pause it: the registry and the worker follow
        await run(ui.open, f"/ui/bots/{new.id}")
        await run(ui.click, "form[action$='/pause'] button")
        assert await run(ui.text, "[data-field=state_text]") == "paused"
        await emulator.state.wait_polling(new.id, polling=False)
        await run(ui.shot, "5-paused")

        # a form stripped of its CSRF token is refused, and changes nothing
        driver.execute_script(
            "document.querySelector(\"form[action$='/resume'] input[name=_csrf]\").remove()"
        )
        await run(ui.click, "form[action$='/resume'] button")
        assert await run(ui.text, "h1") == "Refused"
        assert "CSRF" in await run(ui.text, ".error")
        await run(ui.shot, "6-csrf-403")
        await run(ui.open, f"/ui/bots/{new.id}")
        assert await run(ui.text, "[data-field=state_text]") == "paused"

        # another owner's bot is not found, like a bot that does not exist
        await run(ui.open, f"/ui/bots/{bobs_bot}")
        assert await run(ui.text, "h1") == "Not found"
        assert await run(ui.text, ".error") == f"bot {bobs_bot} is not registered"
        await run(ui.shot, "7-cross-owner-404")

        # the audit page lists those actions, from the dashboard
        await run(ui.open, "/ui/audit")
        actions = [
            e.get_attribute("data-action")
            for e in driver.find_elements(By.CSS_SELECTOR, "tr[data-action]")
        ]
        assert actions[:4] == ["bot.pause", "broadcast.start", "bot.register", "dashboard.login"]
        assert "dashboard:127.0.0.1" in await run(ui.text, "table.audit")
        await run(ui.shot, "8-audit")

        # 375 px wide: the list fits without sideways scrolling
        driver.set_window_size(375, 800)
        await run(ui.open, "/ui/bots")
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 375
        await run(ui.shot, "9-bots-375px")
        for path in (f"/ui/bots/{new.id}/broadcasts", "/ui/audit"):  # the new pages too
            await run(ui.open, path)
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 375, (path, width)

        # the admin's fleet page shows the real worker and both services answering
        driver.set_window_size(1280, 900)
        await run(ui.click, "form.logout button")
        await run(ui.wait_url, lambda u: "/ui/login" in u)
        await run(ui.type_and_submit, {"key": ADMIN_KEY})
        await run(ui.open, "/ui/fleet")
        assert await run(ui.text, "h1") == "Fleet"
        assert (await run(ui.text, "tr[data-worker='0'] [data-field=pid]")).isdigit()
        assert await run(ui.text, "tr[data-worker='0'] [data-field=state]") == "ready"
        services = await run(ui.text, "#health-h + dl")
        assert services.count("ok") >= 2 and "down" not in services, services
        await run(ui.shot, "10-fleet")
    assert len(list((tmp_path / "screenshots").glob("*.png"))) == 10
