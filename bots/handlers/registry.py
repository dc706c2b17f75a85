"""Handler names -> factories. Each handler module is imported only when a bot uses it,
so a worker of echo bots never imports `openai` (half a worker's import time)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from bots.handlers.base import Handler, HandlerDeps, UnknownHandler
from bots.handlers.llm_settings import LLMBotSettings
from bots.handlers.settings import BotSettings, describe
from bots.llm.service import llm_configured
from config import Settings


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


#: Handler name -> its settings model (every key a bot of that handler may set).
SETTINGS: Mapping[str, type[BotSettings]] = {
    "echo": BotSettings,
    "openai": LLMBotSettings,
    "manager": BotSettings,
}


def check_settings(name: str, settings: Mapping[str, Any]) -> list[str]:
    """Problems of a bot's settings for handler `name` (empty: fine), each naming the key."""
    model = SETTINGS.get(name, BotSettings)
    try:
        model.model_validate(dict(settings))
    except ValidationError as err:
        return describe(err, model)
    return []


def unavailable(name: str, config: Settings) -> str | None:
    """Why this host cannot run handler `name` (None: it can)."""
    if name == "openai" and not llm_configured(config.openai):
        return (
            "handler openai: this host has no [openai] configured; set openai.base_url "
            "and/or openai.api_key (BOTVISOR_OPENAI__API_KEY) and reload, then register it"
        )
    return None


def make_handler(name: str, deps: HandlerDeps | None = None) -> Handler:
    """One handler instance per bot, built with the worker's services."""
    factory = HANDLERS.get(name)
    if factory is None:
        raise UnknownHandler(f"unknown handler {name!r}; available: {', '.join(sorted(HANDLERS))}")
    return factory(deps if deps is not None else HandlerDeps())
