"""The handler interface: what a handler gets (`BotContext`) and is built with (`HandlerDeps`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bots.telegram.api import BotApi
from bots.telegram.limited import LimitedApi
from bots.telegram.update import Incoming

if TYPE_CHECKING:
    from bots.handlers.fleet_admin import FleetAdmin
    from bots.llm.client import LLMClient
    from context import ContextStore


class BotContext:
    """What a handler may use: the bot's identity, its API and settings.

    `api` is a `LimitedApi`: every method it has passes the bot's limiter; the raw,
    limiter-free `BotApi.call` is not reachable from here.
    """

    __slots__ = ("api", "bot_id", "settings", "username")

    def __init__(
        self, bot_id: int, username: str, api: BotApi | LimitedApi, settings: Mapping[str, Any]
    ) -> None:
        self.bot_id = bot_id
        self.username = username
        self.api: LimitedApi = api if isinstance(api, LimitedApi) else LimitedApi(api)
        self.settings = settings


class UsageGate(Protocol):
    """Runs in the chat's task; in-memory checks, a registry read only for a bot or owner
    not seen for a while."""

    @property
    def fallback_text(self) -> str:
        """What an openai bot answers while its owner is over the LLM token quota."""
        ...

    async def admit_message(self, bot_id: int) -> bool:
        """Count one update of the bot; False when its owner is over the messages quota."""
        ...

    async def llm_allowed(self, bot_id: int) -> bool:
        """False when the bot's owner is over its LLM tokens quota today."""
        ...

    def count_llm_tokens(self, bot_id: int, tokens: int) -> None:
        """Add tokens a completion of the bot used (written with the next flush)."""
        ...


@dataclass(frozen=True, slots=True)
class HandlerDeps:
    """Worker-wide services a handler is built with (None where not configured)."""

    context: ContextStore | None = None
    llm: LLMClient | None = None
    #: the fleet, for the `manager` handler (set by the worker)
    admin: FleetAdmin | None = None
    #: quotas per owner: messages and LLM tokens per day (set by the worker)
    usage: UsageGate | None = None


class Handler(Protocol):
    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        """Runs in the chat's task; updates of one chat never overlap."""


class UnknownHandler(ValueError):
    """The bot names a handler this build does not have."""
