"""Handlers: what a bot does with an update. Chosen per bot by name (`handler` column)."""

from __future__ import annotations

from bots.handlers.base import BotContext, Handler, HandlerDeps, UnknownHandler, make_handler

__all__ = ["BotContext", "Handler", "HandlerDeps", "UnknownHandler", "make_handler"]
