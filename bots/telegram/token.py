"""A bot token that never prints itself."""

from __future__ import annotations

import re

#: Telegram's: a positive 64-bit bot id, `:`, a secret (35 characters today; room to spare).
_TOKEN = re.compile(r"^([0-9]{1,19}):[A-Za-z0-9_-]{20,80}$")
_MAX_ID = 2**63 - 1


class BadToken(ValueError):
    """The string is not shaped like a Bot API token; the message never repeats it."""


class BotToken:
    """`123456:ABC...` with the secret part hidden from repr, str and logs."""

    __slots__ = ("_value", "bot_id")

    def __init__(self, value: str) -> None:
        value = value.strip()
        match = _TOKEN.fullmatch(value)
        if match is None or not 0 < int(match.group(1)) <= _MAX_ID:
            raise BadToken(
                "not a bot token: expected <bot id>:<secret> as BotFather prints it "
                "(a positive id, a secret of 20-80 letters, digits, _ and -)"
            )
        self._value = value
        self.bot_id = int(match.group(1))

    def reveal(self) -> str:
        """The secret itself: only for building Bot API URLs and encrypting at rest."""
        return self._value

    def masked(self) -> str:
        return f"{self.bot_id}:***"

    def __repr__(self) -> str:
        return f"BotToken(bot_id={self.bot_id}, ***)"

    __str__ = masked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BotToken) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
