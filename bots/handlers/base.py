"""The handler interface: what a handler gets (`BotContext`) and is built with (`HandlerDeps`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bots.telegram.api import BotApi
from bots.telegram.update import Incoming

if TYPE_CHECKING:
    from bots.handlers.fleet_admin import FleetAdmin
    from bots.llm.client import LLMClient
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
