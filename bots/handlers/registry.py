"""Handler names -> factories. Each handler module is imported only when a bot uses it,
so a worker of echo bots never imports `openai` (half a worker's import time)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from bots.handlers import plugins
from bots.handlers.base import Handler, HandlerDeps
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


def resolve(name: str) -> None:
    """Check that `name` names a handler: a built-in, an entry point or an import path that
    imports and is a Router, Dispatcher or factory. Raises UnknownHandler with the reason."""
    if name not in HANDLERS:
        plugins.load(name)


def check_settings(name: str, settings: Mapping[str, Any]) -> list[str]:
    """Problems of a bot's settings for handler `name` (empty: fine), each naming the key.

    A plugin is checked against its module's `settings_model` (the `ratelimit` key is
    everyone's); a plugin without one takes any JSON object."""
    model: type[BaseModel] | None = SETTINGS.get(name, BotSettings)
    data = dict(settings)
    if name not in HANDLERS:
        model = plugins.load(name).settings_model
        if model is None:
            return _free_form(data)
        if not issubclass(model, BotSettings):
            data.pop("ratelimit", None)
            data.pop("telegram", None)
    assert model is not None
    try:
        model.model_validate(data)
    except ValidationError as err:
        return describe(err, model)
    return []


#: A plugin without a settings model takes any JSON object up to these bounds.
FREE_FORM_MAX_BYTES = 65_536
FREE_FORM_MAX_DEPTH = 16


def _free_form(data: Mapping[str, Any]) -> list[str]:
    try:
        size = len(orjson.dumps(data))
    except TypeError as exc:
        return [f"(settings): not JSON ({exc})"]
    if size > FREE_FORM_MAX_BYTES:
        return [f"(settings): {size} bytes of JSON, at most {FREE_FORM_MAX_BYTES}"]
    if _depth(data) > FREE_FORM_MAX_DEPTH:
        return [f"(settings): nested deeper than {FREE_FORM_MAX_DEPTH} levels"]
    return []


def _depth(value: Any) -> int:
    if isinstance(value, Mapping):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def available() -> list[tuple[str, str]]:
    """(name, what it is) of every handler this host knows by name; import paths come on top."""
    out = [(name, "built-in") for name in sorted(HANDLERS)]
    out += [(name, f"entry point: {ep.value}") for name, ep in sorted(plugins.registered().items())]
    return out


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
        # an entry point or import path; raises HandlerLoadError (an UnknownHandler)
        return plugins.build(name, deps if deps is not None else HandlerDeps())
    return factory(deps if deps is not None else HandlerDeps())
