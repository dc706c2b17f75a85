"""The handler interface and the registry of handler names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bots.api import BotApi
from bots.update import Incoming


@dataclass(frozen=True, slots=True)
class BotContext:
    """What a handler may use: the bot's identity, its API (rate-limited) and settings."""

    bot_id: int
    username: str
    api: BotApi
    settings: Mapping[str, Any]


class Handler(Protocol):
    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        """Runs in the chat's task; updates of one chat never overlap."""


class UnknownHandler(ValueError):
    """The bot names a handler this build does not have."""


def _echo() -> Handler:
    from bots.handlers.echo import EchoHandler

    return EchoHandler()


#: Handler name -> factory. Names are the values of the `bots.handler` column.
HANDLERS: Mapping[str, Callable[[], Handler]] = {"echo": _echo}


def make_handler(name: str) -> Handler:
    factory = HANDLERS.get(name)
    if factory is None:
        raise UnknownHandler(f"unknown handler {name!r}; available: {', '.join(sorted(HANDLERS))}")
    return factory()
