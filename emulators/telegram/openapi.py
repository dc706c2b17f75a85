"""The emulator's control API, described once: `botvisor emulator --help` and the OpenAPI
document served at `GET /control/openapi.json` are both built from `CONTROL`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class ControlOp:
    method: str
    path: str
    summary: str
    #: example request body (POST) as JSON text, for --help and the document
    example: str | None = None
    params: tuple[str, ...] = field(default_factory=tuple)


CONTROL: Final[tuple[ControlOp, ...]] = (
    ControlOp(
        "POST",
        "/control/bots",
        "Create bots: N new ones with generated tokens, and/or given tokens (a token of a "
        "known bot id with a new secret replaces its token, like /revoke at @BotFather). "
        'Answers {"bots": [{"id", "token", "username"}]}.',
        '{"count": 2}',
    ),
    ControlOp(
        "POST",
        "/control/inject",
        "Queue one `message` update per item, as if a user wrote to the bot; a negative "
        'chat_id is a group. Answers {"update_ids": [...]}.',
        '{"messages": [{"bot_id": 7000000001, "chat_id": 42, "text": "hi"}]}',
    ),
    ControlOp(
        "POST",
        "/control/revoke",
        "Revoke a bot's token: its calls get 401 from now on.",
        '{"bot_id": 7000000001}',
    ),
    ControlOp(
        "POST",
        "/control/outage",
        "Telegram down: every Bot API request (parked long polls too) answers `code` "
        "(429 with `retry_after`, or a 5xx) for `seconds`; 0 seconds ends it.",
        '{"code": 502, "seconds": 30}',
    ),
    ControlOp(
        "POST",
        "/control/callback_query",
        "Queue a `callback_query` update, as if the user pressed an inline button with "
        "`data` under the bot's message `message_id` (user_id defaults to a private "
        'chat\'s id). Answers {"update_id": N, "callback_query_id": "…"}.',
        '{"bot_id": 7000000001, "chat_id": 42, "message_id": 2, "data": "menu:help"}',
    ),
    ControlOp(
        "POST",
        "/control/chats",
        "Make `count` private chats (ids first_id, first_id + 1, …) known to a bot, the "
        'audience of a broadcast test. Answers {"created": N}.',
        '{"bot_id": 7000000001, "count": 500, "first_id": 1}',
    ),
    ControlOp(
        "POST",
        "/control/block",
        "From now on sendMessage to the chat answers Telegram's exact 403: reason "
        '"blocked" ("Forbidden: bot was blocked by the user"), "deactivated" ("Forbidden: '
        'user is deactivated"), "kicked" (a group), or "none" to unblock.',
        '{"bot_id": 7000000001, "chat_id": 42, "reason": "blocked"}',
    ),
    ControlOp("POST", "/control/reset_stats", "Zero the counters of every bot.", "{}"),
    ControlOp(
        "GET",
        "/control/stats",
        "Totals (sent, replied, duplicates, 429s) and, unless ?bots=0, per-bot counters.",
        params=("bots",),
    ),
    ControlOp(
        "GET",
        "/control/polling",
        'How many bots polled since ?since=<unix time>: {"count": N}.',
        params=("since",),
    ),
    ControlOp("GET", "/control/chats/{bot_id}", "Per-chat counters of one bot."),
    ControlOp(
        "GET",
        "/control/bots/{bot_id}/sent",
        "What one bot sent (chat_id, text, reply_to, date), oldest first.",
    ),
    ControlOp(
        "GET",
        "/control/bots/{bot_id}/calls",
        "One bot's answerCallbackQuery, editMessageText, editMessageReplyMarkup calls and "
        "its sendMessage calls with a reply_markup (method, chat_id, message_id, text, "
        "reply_markup, callback_query_id, at), oldest first.",
    ),
    ControlOp("GET", "/control/openapi.json", "This document (OpenAPI 3.1)."),
)

BOT_API_METHODS: Final = (
    "getMe",
    "getUpdates",
    "sendMessage",
    "sendChatAction",
    "deleteMessage",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "answerCallbackQuery",
    "editMessageText",
    "editMessageReplyMarkup",
    "logOut",
    "close",
)


def help_text(base: str = "http://127.0.0.1:8081") -> str:
    """The epilog of `botvisor emulator --help`: how to create bots and inject messages."""
    lines = [
        "A local stand-in for api.telegram.org: point botvisor at it with",
        f"  BOTVISOR_TELEGRAM__API_BASE={base}",
        f"Bot API at {base}/bot<token>/<method>: {', '.join(BOT_API_METHODS)}.",
        "",
        "Control API (JSON; the full description: GET /control/openapi.json):",
    ]
    for op in CONTROL:
        lines.append(f"  {op.method:<4} {op.path}")
        lines.append(f"       {op.summary}")
    lines += [
        "",
        "Test a bot locally:",
        f"  curl -s -XPOST {base}/control/bots -d '{{\"count\": 1}}'   # prints id and token",
        "  botvisor bots add --token <token>        # then, in another terminal: botvisor run",
        f"  curl -s -XPOST {base}/control/inject \\",
        '       -d \'{"messages": [{"bot_id": <id>, "chat_id": 42, "text": "hi"}]}\'',
        f"  curl -s {base}/control/bots/<id>/sent      # the bot's answer",
    ]
    return "\n".join(lines)


def document() -> dict[str, Any]:
    """OpenAPI 3.1 of the control API."""
    paths: dict[str, dict[str, Any]] = {}
    for op in CONTROL:
        entry: dict[str, Any] = {
            "summary": op.summary,
            "responses": {
                "200": {"description": "OK (JSON)."},
                "400": {"description": 'Bad request: {"ok": false, "description": ...}.'},
                "404": {"description": "Unknown bot or endpoint."},
            },
        }
        parameters = [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in op.params
        ]
        if "{bot_id}" in op.path:
            parameters.append(
                {"name": "bot_id", "in": "path", "required": True, "schema": {"type": "integer"}}
            )
        if parameters:
            entry["parameters"] = parameters
        if op.example is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "object"}, "example": op.example}
                },
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "botvisor Bot API emulator: control API",
            "version": "1",
            "description": "Create bots, inject user messages and read what bots sent. The "
            "Bot API itself is served at /bot<token>/<method>: " + ", ".join(BOT_API_METHODS),
        },
        "paths": paths,
    }
