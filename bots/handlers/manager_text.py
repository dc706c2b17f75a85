"""What the manager bot says. Plain text (no parse mode, so usernames need no escaping);
a token appears only as `<bot id>:***`, a key never."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bots.handlers.fleet_admin import FleetAdminError, ManagedBot, Refusal

HELP: Final = (
    "I manage your botvisor bots, the way @BotFather manages Telegram bots.\n"
    "\n"
    "/login <API key> - link this Telegram account to your owner API key "
    "(the key `botvisor owners add` printed)\n"
    "/addbot <token> - add a bot, with the token @BotFather gave you\n"
    "/mybots - list your bots\n"
    "/newtoken <token> - a new token for one of your bots (after /revoke at @BotFather)\n"
    "/pause <id>, /resume <id>, /remove <id> - change one of them\n"
    "/logout - unlink this Telegram account"
)
SHORT_HELP: Final = (
    "I don't know that one. Try /mybots, /addbot, /pause, /resume, /remove or /help."
)
NOT_LOGGED_IN: Final = (
    "You are not logged in. Send /login <API key> with your owner key first (see /help)."
)
NOT_CONNECTED: Final = "I am not connected to a fleet right now; try again later."
PRIVATE_ONLY: Final = "Talk to me in a private chat: I manage bots only there."
LOGIN_USAGE: Final = "Send /login followed by your owner API key (it starts with bvo_)."
LOGIN_BAD_KEY: Final = "That API key is not valid. Check it and send /login <API key> again."
ADDBOT_USAGE: Final = (
    "Send me the bot's token from @BotFather (it looks like 123456789:AAE...), or /addbot <token>."
)
NEWTOKEN_USAGE: Final = (
    "Send /newtoken followed by the bot's new token from @BotFather; the bot keeps its settings."
)
LOGGED_OUT: Final = "Logged out. This Telegram account no longer manages any bots."
NOT_LOGGED_IN_ANYWAY: Final = "You were not logged in."
NO_BOTS: Final = "You have no bots yet. Add one with /addbot <token>."
NOT_ME: Final = (
    "That is me, the manager bot. Pause or remove me with `botvisor bots` or the admin API, "
    "so you don't lock yourself out."
)
UNAVAILABLE: Final = "I could not reach Telegram or the registry just now; try again in a minute."
#: Appended to a reply to a message that held a key or a token.
DELETED_NOTE: Final = "I deleted your message: it held a secret."
DELETE_IT_NOTE: Final = "Please delete your message now: it holds a secret."
GROUP_SECRET: Final = (
    "That message holds a secret (an API key or a bot token) and everyone here can read it. "
    "Replace it now: a new key from the admin, or /revoke at @BotFather."
)
#: Room left for "... and N more" under Telegram's 4,096 characters.
LIST_BUDGET: Final = 3900


def usage(command: str) -> str:
    return f"Send /{command} <bot id>; /mybots lists your bots and their ids."


def masked(bot_id: int) -> str:
    return f"{bot_id}:***"


def name(bot: ManagedBot) -> str:
    return f"@{bot.username} ({bot.id})" if bot.username else f"bot {bot.id}"


def logged_in(owner: str) -> str:
    return (
        f"Logged in as owner {owner}. Add a bot with /addbot <token>; see your bots with /mybots."
    )


def added(bot: ManagedBot) -> str:
    return f"Added {name(bot)}. It is starting now; /mybots shows it."


def token_replaced(bot: ManagedBot) -> str:
    return f"New token stored for {name(bot)}; it is {bot.state} now."


def paused(bot: ManagedBot) -> str:
    return f"Paused {name(bot)}. /resume {bot.id} starts it again."


def resumed(bot: ManagedBot) -> str:
    return f"Resumed {name(bot)}: it is active again."


def removed(bot_id: int) -> str:
    return (
        f"Removed bot {bot_id}. botvisor no longer holds its token; "
        "revoke the token at @BotFather if nobody else should use it."
    )


def bot_list(bots: Sequence[ManagedBot]) -> str:
    if not bots:
        return NO_BOTS
    lines = [f"Your bots ({len(bots)}):"]
    used = len(lines[0])
    for shown, bot in enumerate(bots):
        line = f"{bot.id} @{bot.username or '-'} - {bot.state}"
        if bot.disabled_reason:
            line += f" ({bot.disabled_reason[:120]})"
        if used + len(line) + 1 > LIST_BUDGET:
            lines.append(f"... and {len(bots) - shown} more")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def refusal(exc: FleetAdminError) -> str:
    bot = "that bot" if exc.bot_id is None else f"bot {exc.bot_id}"
    match exc.refusal:
        case Refusal.NOT_FOUND:
            return f"No such bot: {exc.bot_id}. /mybots lists yours."
        case Refusal.ALREADY_REGISTERED:
            token = "that token" if exc.bot_id is None else masked(exc.bot_id)
            return f"The bot of {token} is already registered with botvisor."
        case Refusal.ALREADY_YOURS:
            return (
                f"You already have {bot}; /mybots lists it. If @BotFather gave it a new "
                "token, send /newtoken <token>."
            )
        case Refusal.BAD_TOKEN:
            return "That is not a bot token. " + ADDBOT_USAGE
        case Refusal.TOKEN_REJECTED:
            token = "that token" if exc.bot_id is None else masked(exc.bot_id)
            return (
                f"Telegram rejected the token {token}: it was revoked or mistyped. "
                "Get the current one from @BotFather (/token) and send it again."
            )
        case Refusal.LOCKED_OUT:
            return "Too many wrong keys. Wait a while, then send /login <API key> again."
        case Refusal.UNAVAILABLE:
            return UNAVAILABLE
        case Refusal.QUOTA_EXCEEDED:
            return (
                "You have as many bots as your quota allows. /remove one first, or ask the "
                "administrator to raise your quota."
            )
