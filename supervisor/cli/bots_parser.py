"""The arguments of the bot commands: bots, handlers, chats (supervisor/cli/parser.py puts
them in `botvisor`'s parser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def add_bots_commands(sub: Any) -> None:
    """bots (add, update, move-api, replace-token, import, list, show, remove, pause,
    resume) and handlers (list, check)."""
    bots = sub.add_parser("bots", help="register and manage bots")
    bsub = bots.add_subparsers(dest="bots_command", required=True, metavar="ACTION")
    add = bsub.add_parser("add", help="register a bot (checks the token with getMe)")
    given = add.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--token-file",
        metavar="PATH",
        help="read the token BotFather gave you from PATH, or from stdin with '-'",
    )
    given.add_argument("--token", help="the token itself (visible to `ps`: prefer --token-file)")
    add.add_argument(
        "--handler",
        default="echo",
        help="what the bot does: a built-in (echo), an entry point name, or an import path "
        "package.module:attr of an aiogram Router/Dispatcher or a factory (default echo; "
        "see `botvisor handlers list`)",
    )
    add.add_argument("--owner", metavar="NAME", help="the owner (see `botvisor owners add`)")
    add.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a handler setting; repeatable",
    )
    upd = bsub.add_parser("update", help="change a bot's handler, settings or mode")
    upd.add_argument("id", type=int, help="bot id (the number before ':' in its token)")
    upd.add_argument("--handler", help="the new handler")
    upd.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="set a setting; repeatable"
    )
    upd.add_argument("--unset", action="append", default=[], metavar="KEY", help="drop a setting")
    upd.add_argument(
        "--mode",
        choices=("polling", "webhook"),
        help="how the bot receives updates; webhook needs webhook.public_url (switched live)",
    )
    mov = bsub.add_parser(
        "move-api",
        help="move a bot to another Bot API server (a local telegram-bot-api, or back)",
        description="Move a bot between Bot API servers: logOut on the cloud server "
        "(telegram.api_base) when leaving it, close on a local server when leaving that, "
        "then store the new base in the bot's settings (telegram.api_base). Telegram "
        "refuses close in the first 10 minutes after a bot's launch, and a bot logged out "
        "of the cloud may log in there again only after 10 minutes.",
    )
    mov.add_argument("id", type=int, help="bot id (the number before ':' in its token)")
    mov.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the new Bot API base, e.g. http://127.0.0.1:8081 (a local server) or "
        "telegram.api_base (back to the cloud)",
    )
    rep = bsub.add_parser(
        "replace-token",
        help="give a bot a new token (after /revoke), keeping owner and settings",
        description="Store a new token from @BotFather for a registered bot (the bot id stays "
        "the same): checked with getMe, encrypted under the current key; a bot disabled "
        "for a revoked token polls again. The token is read from a file (or - for stdin) "
        "so it never shows in `ps` or the shell history.",
    )
    rep.add_argument("id", type=int, help="bot id (the number before ':' in its token)")
    rep.add_argument(
        "--token-file",
        required=True,
        metavar="FILE",
        help="file holding the new token on its first line; - reads stdin",
    )
    imp = bsub.add_parser("import", help="register many bots from a file, one token a line")
    imp.add_argument("file", type=Path)
    imp.add_argument("--handler", default="echo")
    imp.add_argument(
        "--no-check",
        action="store_true",
        help="skip the getMe check (faster for thousands of known-good tokens)",
    )
    lst = bsub.add_parser("list", help="list registered bots")
    lst.add_argument("--json", action="store_true")
    for name, text in (
        ("show", "show one bot"),
        ("remove", "unregister a bot"),
        ("pause", "stop a bot's polling, keep it registered"),
        ("resume", "resume a paused bot"),
    ):
        cmd = bsub.add_parser(name, help=text)
        cmd.add_argument("id", type=int, help="bot id (the number before ':' in its token)")

    handlers = sub.add_parser("handlers", help="what a bot's --handler may name")
    hsub = handlers.add_subparsers(dest="handlers_command", required=True, metavar="ACTION")
    hsub.add_parser("list", help="built-in handlers, installed entry points, handler paths")
    hchk = hsub.add_parser(
        "check", help="import a handler reference the way a worker does and say what it is"
    )
    hchk.add_argument("ref", help="a name or an import path like package.module:router")


def add_chats_command(sub: Any) -> None:
    chats = sub.add_parser("chats", help="conversations of openai bots")
    csub = chats.add_subparsers(dest="chats_command", required=True, metavar="ACTION")
    rel = csub.add_parser(
        "release",
        help="give a chat handed to a human operator back to its bot",
        description="End the operator handoff of one chat: the bot answers it again. "
        "A group's negative chat id goes after --, e.g. `chats release 123 -- -100456`.",
    )
    rel.add_argument("bot", type=int, help="bot id (the number before ':' in its token)")
    rel.add_argument("chat", type=int, help="Telegram chat id")
