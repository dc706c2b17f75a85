"""`manager`: owners manage their bots from Telegram, the way @BotFather manages bots.

/start and /help explain; /login <owner API key> links the Telegram user (message.from.id)
to the owner; /addbot <token> (or a bare token) registers a bot for that owner; /mybots
(or /list) lists them; /pause, /resume, /remove <id>; /newtoken <token> gives one of them
the new token @BotFather issued after /revoke; /logout. The fleet is reached only
through `FleetAdmin` (bots never import supervisor), which the worker supplies.

Private chats only: in a group the bot answers commands with "talk to me in private".
A message holding a secret (a key or a token of any shape, the admin key or any other
secret this process knows, or any `/login` or `/addbot` argument) is deleted at once in
any chat where Telegram lets the bot, and the reply says so, or asks the user to delete
it. A wrong key is never told apart from another (the admin key is just wrong here), and
wrong keys lock the user out for a growing time. Replies show a token only as
`<id>:***`; nothing here logs message text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import structlog

from bots.handlers import manager_text as say
from bots.handlers.base import BotContext
from bots.handlers.fleet_admin import FleetAdmin, FleetAdminError, Refusal
from bots.telegram.errors import BotNetworkError, TelegramError
from bots.telegram.token import BadToken, BotToken
from bots.telegram.update import Incoming
from config.redact import contains_secret

log = structlog.get_logger(__name__)

#: A whole message that is only a bot token or only an owner key (sent without a command).
_BARE_TOKEN: Final = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,}$")
_BARE_KEY: Final = re.compile(r"^bvo_\d+_\S+$")
#: Anything secret-looking inside a message.
_SECRET: Final = re.compile(r"\d{3,20}:[A-Za-z0-9_-]{20,}|bvo_\d+_\S+")
#: Commands whose argument is a secret.
_SECRET_COMMANDS: Final = frozenset({"login", "addbot", "newtoken"})
#: deleteMessage is best effort; a slow answer must not hold up the reply.
DELETE_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class _Said:
    """The parts of one incoming text message the manager uses."""

    chat_id: int
    message_id: int
    user_id: int
    private: bool
    command: str | None  # "login" for "/login@me key"; None for plain text
    arg: str


def _parse(update: Incoming, username: str) -> _Said | None:
    """A new text message from a user (edits and others' commands are ignored), or None."""
    msg = update.raw.get("message")
    text = update.text
    if not isinstance(msg, dict) or text is None or update.message_id is None:
        return None
    sender, chat = msg.get("from"), msg.get("chat")
    if not isinstance(sender, dict) or sender.get("is_bot") or not isinstance(chat, dict):
        return None
    text = text.strip()
    command: str | None = None
    arg = text
    if text.startswith("/"):
        head, *rest = text.split(maxsplit=1)
        command, _, target = head[1:].partition("@")
        if target and target.lower() != username.lower() and chat.get("type") != "private":
            return None  # a command for another bot in the group
        command, arg = command.lower(), rest[0].strip() if rest else ""
    elif _BARE_TOKEN.match(text):
        command = "addbot"
    elif _BARE_KEY.match(text):
        command = "login"
    return _Said(
        update.chat_id,
        update.message_id,
        int(sender.get("id", 0)),
        chat.get("type") == "private",
        command,
        arg,
    )


def _bot_id(arg: str) -> int | None:
    """A bot id: ASCII digits (str.isdigit also takes other scripts' digits), within int64."""
    arg = arg.strip().lstrip("@")
    if not (arg.isascii() and arg.isdigit() and len(arg) <= 19):
        return None
    value = int(arg)
    return value if 0 < value <= 2**63 - 1 else None


class ManagerHandler:
    def __init__(self, admin: FleetAdmin | None) -> None:
        self._admin = admin

    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        """Runs in the chat's task: one user's commands are handled in order."""
        said = _parse(update, ctx.username)
        if said is None:
            return
        holds_secret = _holds_secret(said, update.text or "")
        if not said.private:
            await self._in_group(said, holds_secret, ctx)
            return
        note = ""
        if holds_secret:
            deleted = await _delete(ctx, said)
            note = "\n\n" + (say.DELETED_NOTE if deleted else say.DELETE_IT_NOTE)
        if self._admin is None:
            log.error("manager.no_fleet_admin", bot_id=ctx.bot_id)
            reply = say.NOT_CONNECTED
        else:
            try:
                reply = await self._answer(self._admin, said, ctx)
            except FleetAdminError as exc:
                log.info(
                    "manager.refused", bot_id=ctx.bot_id, user_id=said.user_id, refusal=exc.refusal
                )
                reply = say.refusal(exc)
        await ctx.api.send_message(said.chat_id, reply + note)

    async def _answer(self, admin: FleetAdmin, said: _Said, ctx: BotContext) -> str:
        match said.command:
            case "start" | "help":
                return say.HELP
            case "login":
                return await self._login(admin, said)
            case "logout":
                gone = await admin.logout(said.user_id)
                return say.LOGGED_OUT if gone else say.NOT_LOGGED_IN_ANYWAY
        owner_id = await admin.owner_of(said.user_id)
        if owner_id is None:
            return say.NOT_LOGGED_IN
        return await self._as_owner(admin, owner_id, said, ctx)

    async def _as_owner(
        self, admin: FleetAdmin, owner_id: int, said: _Said, ctx: BotContext
    ) -> str:
        match said.command:
            case "addbot":
                return await self._add(admin, owner_id, said)
            case "newtoken":
                return await self._new_token(admin, owner_id, said)
            case "mybots" | "list":
                return say.bot_list(await admin.list_bots(owner_id))
            case "pause" | "resume" | "remove" as command:
                bot_id = _bot_id(said.arg)
                if bot_id is None:
                    return say.usage(command)
                if bot_id == ctx.bot_id and command != "resume":
                    return say.NOT_ME
                user = said.user_id
                if command == "pause":
                    return say.paused(await admin.pause(owner_id, bot_id, user_id=user))
                if command == "resume":
                    return say.resumed(await admin.resume(owner_id, bot_id, user_id=user))
                await admin.remove(owner_id, bot_id, user_id=user)
                return say.removed(bot_id)
        return say.SHORT_HELP

    async def _login(self, admin: FleetAdmin, said: _Said) -> str:
        if not said.arg:
            return say.LOGIN_USAGE
        owner = await admin.login(said.user_id, said.arg)
        return say.LOGIN_BAD_KEY if owner is None else say.logged_in(owner)

    async def _add(self, admin: FleetAdmin, owner_id: int, said: _Said) -> str:
        if not said.arg:
            return say.ADDBOT_USAGE
        try:
            token = BotToken(said.arg)
        except BadToken:
            raise FleetAdminError(Refusal.BAD_TOKEN) from None
        bot = await admin.register(owner_id, token.reveal(), user_id=said.user_id)
        return say.added(bot)

    async def _new_token(self, admin: FleetAdmin, owner_id: int, said: _Said) -> str:
        if not said.arg:
            return say.NEWTOKEN_USAGE
        try:
            token = BotToken(said.arg)
        except BadToken:
            raise FleetAdminError(Refusal.BAD_TOKEN) from None
        bot = await admin.replace_token(owner_id, token.reveal(), user_id=said.user_id)
        return say.token_replaced(bot)

    async def _in_group(self, said: _Said, holds_secret: bool, ctx: BotContext) -> None:
        """Groups get no service: a command is told to go private; a secret is removed."""
        if holds_secret:
            deleted = await _delete(ctx, said)
            log.warning("manager.secret_in_group", bot_id=ctx.bot_id, deleted=deleted)
            reply = say.GROUP_SECRET + ("\n\n" + say.DELETED_NOTE if deleted else "")
            await ctx.api.send_message(said.chat_id, reply)
        elif said.command is not None:
            await ctx.api.send_message(said.chat_id, say.PRIVATE_ONLY)


def _holds_secret(said: _Said, text: str) -> bool:
    """A secret command's argument, a key or token shape, or a value this process knows
    to be secret (the admin key, encryption keys: config/redact.py)."""
    return (
        (said.command in _SECRET_COMMANDS and bool(said.arg))
        or _SECRET.search(text) is not None
        or contains_secret(text)
    )


async def _delete(ctx: BotContext, said: _Said) -> bool:
    """deleteMessage, best effort: False when Telegram refuses or does not answer."""
    params: dict[str, Any] = {"chat_id": said.chat_id, "message_id": said.message_id}
    try:
        await ctx.api.once("deleteMessage", params, None, timeout=DELETE_TIMEOUT_S)
    except (TelegramError, BotNetworkError) as exc:
        log.info("manager.delete_failed", bot_id=ctx.bot_id, error=type(exc).__name__)
        return False
    return True
