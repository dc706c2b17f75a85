"""Handler names -> factories. Each handler module is imported only when a bot uses it,
so a worker of echo bots never imports `openai` (half a worker's import time)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bots.handlers.base import Handler, HandlerDeps, UnknownHandler


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
