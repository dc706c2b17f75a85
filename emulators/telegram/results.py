"""What the emulator answers: `(http_status, body_bytes)` results and Telegram's bodies.

Results are pairs so the HTTP layer only copies them out; the fixed answers are built
once, with Telegram's exact descriptions.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

#: Telegram's maximum message length.
MAX_TEXT: Final = 4096

#: (HTTP status, JSON body)
Result = tuple[int, bytes]


class InjectError(ValueError):
    """A control request named an unknown bot or carried a malformed message."""


def error(code: int, description: str, retry_after: int | None = None) -> Result:
    """A Telegram-shaped error body."""
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return code, orjson.dumps(body)


def ok(result: Any) -> Result:
    return 200, orjson.dumps({"ok": True, "result": result})


NOT_FOUND: Final = error(404, "Not Found")
#: sendMessage's 403s for a chat that cannot be written to, by `block` reason (exact bodies)
BLOCKED: Final[dict[str, Result | None]] = {
    "blocked": error(403, "Forbidden: bot was blocked by the user"),
    "deactivated": error(403, "Forbidden: user is deactivated"),
    "kicked": error(403, "Forbidden: bot was kicked from the group chat"),
    "none": None,
}
UNAUTHORIZED: Final = error(401, "Unauthorized")
CONFLICT_GET_UPDATES: Final = error(
    409,
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
)
CONFLICT_SET_WEBHOOK: Final = error(409, "Conflict: terminated by setWebhook request")
CONFLICT_WEBHOOK_ACTIVE: Final = error(
    409,
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first",
)
TEXT_EMPTY: Final = error(400, "Bad Request: message text is empty")
TEXT_TOO_LONG: Final = error(400, "Bad Request: message is too long")
CHAT_ID_EMPTY: Final = error(400, "Bad Request: chat_id is empty")
CHAT_NOT_FOUND: Final = error(400, "Bad Request: chat not found")
MESSAGE_NOT_FOUND: Final = error(400, "Bad Request: message to delete not found")
EMPTY_UPDATES: Final[Result] = (200, b'{"ok":true,"result":[]}')
OK_TRUE: Final[Result] = (200, b'{"ok":true,"result":true}')
