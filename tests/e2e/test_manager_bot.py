"""The manager bot: owners manage their bots by talking to one bot of the fleet. The real
daemon (master and worker processes), real PostgreSQL and Redis, the Bot API emulator as
Telegram in this process, so a test talks to the bot as users would and waits on what it
sends."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bots.telegram.token import BotToken
from config import Settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.registry.bot_records import BotState
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry
from tests.daemon import Daemon, start_daemon

pytestmark = pytest.mark.timeout(90)

ADMIN_KEY = "admin-" + secrets.token_urlsafe(32)
ALICE, BOB, CAROL = 501, 502, 503  # Telegram user ids (and their private chat ids)
GROUP = -9001
REPLY_TIMEOUT_S = 15


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    # per-chat flood limits off: a conversation here is a dozen messages in a second
    async with open_emulator(per_chat=None) as emu:
        yield emu


@dataclass
class Fleet:
    emu: RunningEmulator
    daemon: Daemon
    settings: Settings
    manager_id: int
    keys: dict[str, str]  # owner name -> API key
    #: every secret a reply or a log line must never hold
    secrets: list[str] = field(default_factory=list)

    def chat(self, user_id: int, chat_id: int | None = None) -> Chat:
        return Chat(self, user_id, user_id if chat_id is None else chat_id)

    def new_token(self) -> tuple[int, str]:
        bot = self.emu.state.create_bots(1)[0]
        self.secrets.append(bot.token.split(":", 1)[1])
        return bot.id, bot.token

    def sent_texts(self) -> Iterator[str]:
        for message in self.emu.state.sent_log(self.manager_id) or []:
            yield str(message["text"])


@dataclass
class Chat:
    fleet: Fleet
    user_id: int
    chat_id: int

    def replies(self) -> list[str]:
        sent = self.fleet.emu.state.sent_log(self.fleet.manager_id) or []
        return [str(m["text"]) for m in sent if m["chat_id"] == self.chat_id]

    async def say(self, text: str) -> str:
        """Send `text` as this user; the manager's answer."""
        before = len(self.replies())
        self.fleet.emu.state.inject(
            [
                {
                    "bot_id": self.fleet.manager_id,
                    "chat_id": self.chat_id,
                    "user_id": self.user_id,
                    "text": text,
                }
            ]
        )
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            await self.fleet.emu.state.wait_until(lambda: len(self.replies()) > before)
        replies = self.replies()
        assert len(replies) == before + 1, replies[before:]
        return replies[-1]

    def deleted(self) -> frozenset[int]:
        return self.fleet.emu.state.deleted_messages(self.fleet.manager_id, self.chat_id)


@asynccontextmanager
async def open_fleet(
    fresh_settings: Callable[..., Settings], emu: RunningEmulator, tmp: Path, **security: Any
) -> AsyncIterator[Fleet]:
    settings = fresh_settings(
        workers={"count": 1},
        security={"admin_key": ADMIN_KEY, **security},
        ratelimit={"per_chat": {"limit": 100, "period_s": 1}},
    )
    (manager,) = emu.state.create_bots(1)
    keys = {}
    async with open_registry(settings) as registry:
        await registry.add(BotToken(manager.token), username=manager.username, handler="manager")
        for name in ("alice", "bob"):
            _, keys[name] = await create_owner(registry, name)
    refusals = ("manager.login_refused", "manager.login_failed", "manager.secret_in_group")
    async with start_daemon(settings, emu.base_url, tmp, expect_warnings=refusals) as daemon:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            await emu.state.wait_polling(manager.id)
        fleet = Fleet(emu, daemon, settings, manager.id, keys)
        fleet.secrets += [manager.token.split(":", 1)[1], *keys.values(), ADMIN_KEY]
        yield fleet
        assert daemon.proc.returncode is None
        sent = list(fleet.sent_texts())
        log = daemon.log_text()
        for secret in fleet.secrets:
            assert not [t for t in sent if secret in t], "a reply holds a secret"
            assert secret not in log, "a log line holds a secret"


async def wait_polling(fleet: Fleet, bot_id: int, polling: bool) -> None:
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        await fleet.emu.state.wait_polling(bot_id, polling)


async def test_an_owner_adds_lists_pauses_resumes_and_removes_a_bot_from_telegram(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    async with open_fleet(fresh_settings, emulator, tmp_path) as fleet:
        alice, bob = fleet.chat(ALICE), fleet.chat(BOB)
        assert "/login" in await alice.say("/start")

        reply = await alice.say(f"/login {fleet.keys['alice']}")
        assert "Logged in as owner alice" in reply and "I deleted your message" in reply
        assert len(alice.deleted()) == 1  # the message with the key is gone

        bot_id, token = fleet.new_token()
        reply = await alice.say(f"/addbot\n{token}")  # as a phone keyboard may send it
        assert f"Added @emu{bot_id}_bot ({bot_id})" in reply, reply
        await wait_polling(fleet, bot_id, True)  # the new bot runs, no restart

        reply = await alice.say("/mybots")
        assert reply == f"Your bots (1):\n{bot_id} @emu{bot_id}_bot - active"
        assert await alice.say(f"/addbot {token}") == (
            f"You already have bot {bot_id}; /mybots lists it. If @BotFather gave it a new "
            "token, send /newtoken <token>.\n\nI deleted your message: it held a secret."
        )

        # another owner's Telegram user sees nothing of alice's and changes nothing
        assert "alice" not in await bob.say(f"/login {fleet.keys['bob']}")
        assert await bob.say("/mybots") == "You have no bots yet. Add one with /addbot <token>."
        for command in ("pause", "resume", "remove"):
            assert await bob.say(f"/{command} {bot_id}") == (
                f"No such bot: {bot_id}. /mybots lists yours."
            )
        reply = await bob.say(token)  # a bare token: bob may hold it, but the bot is taken
        assert reply.startswith(f"The bot of {bot_id}:*** is already registered"), reply

        assert (await alice.say(f"/pause {bot_id}")).startswith(f"Paused @emu{bot_id}_bot")
        await wait_polling(fleet, bot_id, False)
        assert f"{bot_id} @emu{bot_id}_bot - paused" in await alice.say("/list")
        assert (await alice.say(f"/resume {bot_id}")).startswith(f"Resumed @emu{bot_id}_bot")
        await wait_polling(fleet, bot_id, True)

        assert (await alice.say(f"/remove {bot_id}")).startswith(f"Removed bot {bot_id}.")
        await wait_polling(fleet, bot_id, False)
        async with open_registry(fleet.settings, apply_migrations=False) as registry:
            assert await registry.get(bot_id) is None
            manager = await registry.get(fleet.manager_id)
            assert manager is not None and manager.state == BotState.ACTIVE
        assert "You have no bots yet" in await alice.say("/mybots")

        assert (await alice.say("/logout")).startswith("Logged out.")
        assert "not logged in" in await alice.say("/mybots")

        # each change is in the audit log as alice's, from her Telegram user (the change and
        # its row are one statement: no waiting for the worker's writer)
        assert fleet.settings.database.url is not None
        conn = await asyncpg.connect(fleet.settings.database.url.get_secret_value(), timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT actor, action, target FROM audit_log"
                " WHERE source = $1 AND outcome = 'ok' AND action LIKE 'bot.%' ORDER BY id",
                f"telegram:{ALICE}",
                timeout=10,
            )
            alice_id = await conn.fetchval("SELECT id FROM owners WHERE name = 'alice'")
        finally:
            await conn.close(timeout=10)
        assert [(r["actor"], r["action"], r["target"]) for r in rows] == [
            (f"owner:{alice_id}", action, f"bot:{bot_id}")
            for action in ("bot.register", "bot.pause", "bot.resume", "bot.remove")
        ]


async def test_refusals_are_friendly_and_never_show_a_secret(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    async with open_fleet(fresh_settings, emulator, tmp_path) as fleet:
        carol, alice = fleet.chat(CAROL), fleet.chat(ALICE)
        # a user who has not logged in is sent to /login, whatever they ask
        for text in ("/mybots", f"/pause {fleet.manager_id}", "hello"):
            assert "/login" in await carol.say(text), text
        _, token = fleet.new_token()
        reply = await carol.say(f"/addbot {token}")
        assert "not logged in" in reply and "I deleted your message" in reply
        reply = await carol.say("/login bvo_1_" + "x" * 43)
        assert reply.startswith("That API key is not valid.")
        # the admin key is just a wrong key here: nothing tells it apart
        assert (await carol.say(f"/login {ADMIN_KEY}")).startswith("That API key is not valid.")
        assert "not logged in" in await carol.say("/mybots")  # neither key linked carol

        await alice.say(f"/login {fleet.keys['alice']}")
        revoked_id, revoked = fleet.new_token()
        emulator.state.revoke(revoked_id)
        reply = await alice.say(f"/addbot {revoked}")
        assert reply.startswith(f"Telegram rejected the token {revoked_id}:***:"), reply
        reply = await alice.say("/addbot 12345:short")
        assert reply.startswith("That is not a bot token."), reply
        assert (await alice.say("/addbot")).startswith("Send me the bot's token")
        assert (await alice.say("/pause")).startswith("Send /pause <bot id>")
        assert (await alice.say(f"/pause {fleet.manager_id}")).startswith("That is me")
        assert (await alice.say("what now?")).startswith("I don't know that one.")
        async with open_registry(fleet.settings, apply_migrations=False) as registry:
            assert [b.id for b in await registry.list()] == [fleet.manager_id]

        # a new owner key (the old one leaked, say) unlinks who logged in with the old one
        assert "You have no bots yet" in await alice.say("/mybots")
        assert fleet.settings.database.url is not None
        conn = await asyncpg.connect(fleet.settings.database.url.get_secret_value(), timeout=10)
        try:
            await conn.execute(
                "UPDATE owners SET api_key_hash = $1 WHERE name = 'alice'",
                secrets.token_bytes(32),
                timeout=10,
            )
        finally:
            await conn.close(timeout=10)
        assert "not logged in" in await alice.say("/mybots")

        # in a group: no service, and a secret posted there is removed at once
        group = fleet.chat(ALICE, GROUP)
        assert (await group.say("/mybots")).startswith("Talk to me in a private chat")
        reply = await group.say(f"/login {fleet.keys['alice']}")
        assert reply.startswith("That message holds a secret") and "I deleted" in reply
        assert len(group.deleted()) == 1


async def test_wrong_keys_lock_a_telegram_user_out_and_the_admin_key_is_just_wrong(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    async with open_fleet(fresh_settings, emulator, tmp_path, login_free_failures=3) as fleet:
        carol, alice = fleet.chat(CAROL), fleet.chat(ALICE)
        wrong = ["bvo_1_" + "x" * 43, ADMIN_KEY, "guess-" + "y" * 30]
        replies = [await carol.say(f"/login {key}") for key in wrong]
        # the admin key is not told apart from any other wrong key
        assert len({r.split("\n")[0] for r in replies}) == 1, replies
        assert all(r.startswith("That API key is not valid.") for r in replies)
        assert not [r for r in carol.replies() if "admin" in r.lower()]
        assert (await carol.say(f"/login {ADMIN_KEY}x")).startswith("That API key is not valid.")
        # now locked: even the right key is refused, and nothing says whether it was right
        assert (await carol.say(f"/login {fleet.keys['alice']}")).startswith("Too many wrong keys")
        assert "not logged in" in await carol.say("/mybots")
        # another user is not affected
        assert "alice" in await alice.say(f"/login {fleet.keys['alice']}")
        # every one of those messages held a secret and was deleted
        assert len(carol.deleted()) == 5


async def test_any_secret_is_deleted_in_any_chat_and_login_works_only_in_private(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    async with open_fleet(fresh_settings, emulator, tmp_path) as fleet:
        carol = fleet.chat(CAROL)
        group = fleet.chat(CAROL, GROUP)
        # private: a bare admin key, a key inside other text, a token inside other text
        _, token = fleet.new_token()
        for text in (ADMIN_KEY, f"my key is {fleet.keys['bob']} ok?", f"here: {token} thanks"):
            reply = await carol.say(text)
            assert "I deleted your message" in reply, (text, reply)
        assert len(carol.deleted()) == 3
        # group: /login with the admin key (no key shape) is deleted, and not honoured
        reply = await group.say(f"/login {ADMIN_KEY}")
        assert reply.startswith("That message holds a secret") and "I deleted" in reply
        reply = await group.say(f"note {ADMIN_KEY}")
        assert reply.startswith("That message holds a secret")
        assert len(group.deleted()) == 2
        assert (await group.say("/login")).startswith("Talk to me in a private chat")
        async with open_registry(fleet.settings, apply_migrations=False) as registry:
            assert await registry.owners()  # unchanged: alice and bob
        assert "not logged in" in await carol.say("/mybots")
