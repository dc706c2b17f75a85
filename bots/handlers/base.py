"""The handler interface and the registry of handler names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bots.api import BotApi
from bots.update import Incoming

if TYPE_CHECKING:
    from bots.fleet_admin import FleetAdmin
    from bots.llm import LLMClient
    from context import ContextStore


@dataclass(frozen=True, slots=True)
class BotContext:
    """What a handler may use: the bot's identity, its API (rate-limited) and settings."""

    bot_id: int
    username: str
    api: BotApi
    settings: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class HandlerDeps:
    """Worker-wide services a handler is built with (None where not configured)."""

    context: ContextStore | None = None
    llm: LLMClient | None = None
    #: the fleet, for the `manager` handler (set by the worker)
    admin: FleetAdmin | None = None


class Handler(Protocol):
    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        """Runs in the chat's task; updates of one chat never overlap."""


class UnknownHandler(ValueError):
    """The bot names a handler this build does not have."""


def _echo(deps: HandlerDeps) -> Handler:
    from bots.handlers.echo import EchoHandler

    return EchoHandler()


def _openai(deps: HandlerDeps) -> Handler:
    from bots.handlers.openai_handler import OpenAIHandler

    return OpenAIHandler(deps)


def _manager(deps: HandlerDeps) -> Handler:
    from bots.handlers.manager import ManagerHandler

    return ManagerHandler(deps.admin)


#: Handler name -> factory. Names are the values of the `bots.handler` column.
HANDLERS: Mapping[str, Callable[[HandlerDeps], Handler]] = {
    "echo": _echo,
    "openai": _openai,
    "manager": _manager,
}


def make_handler(name: str, deps: HandlerDeps | None = None) -> Handler:
    """One handler instance per bot, built with the worker's services."""
    factory = HANDLERS.get(name)
    if factory is None:
        raise UnknownHandler(f"unknown handler {name!r}; available: {', '.join(sorted(HANDLERS))}")
    return factory(deps if deps is not None else HandlerDeps())
