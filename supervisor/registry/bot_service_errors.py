"""The errors of BotService (supervisor/registry/bot_service.py) and of the services built on
it: a `kind` the API turns into a status and the CLI into an exit status, a stable `code`, and
a message that never holds a token."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    #: no such bot, or not the caller's
    NOT_FOUND = "not_found"
    #: the bot is registered already
    CONFLICT = "conflict"
    #: a value is wrong (bad token shape, unknown handler or owner, token rejected)
    INVALID = "invalid"
    #: the caller may not do this
    FORBIDDEN = "forbidden"
    #: Telegram did not answer getMe
    UPSTREAM = "upstream"
    #: the owner is at a quota (`QuotaExceeded` says which)
    QUOTA = "quota"


class BotServiceError(Exception):
    def __init__(self, kind: ErrorKind, code: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message


class QuotaExceeded(BotServiceError):
    """Refused: the owner is at `quota` (e.g. "bots"), whose limit is `limit`."""

    def __init__(self, quota: str, limit: int, used: int) -> None:
        super().__init__(
            ErrorKind.QUOTA,
            "quota_exceeded",
            f"quota: the owner has {used} of its {limit} {quota}; remove one first, or ask "
            "the admin to raise the quota (`botvisor owners set-quota`)",
        )
        self.quota = quota
        self.limit = limit
        self.used = used
