"""A support bot written as a plain aiogram Router, run by botvisor.

    botvisor bots add --token-file T --handler examples.support_bot:router

Commands (/start, /help, /cancel), an inline-keyboard menu answered with callback
queries, an FSM form that asks three questions (its state survives worker restarts:
botvisor keeps it in the context store), and an error handler. Per-bot settings come
in as the `bot_settings` workflow data, checked against `settings_model` at
registration: `botvisor bots update ID --set greeting='"Hi!"'`.
"""

from __future__ import annotations

from aiogram import Router

from examples.support_bot import form, menu
from examples.support_bot.errors import errors
from examples.support_bot.settings import SupportSettings

#: botvisor checks each bot's settings against this model when it is registered/updated
settings_model = SupportSettings

#: the handler botvisor runs: `--handler examples.support_bot:router`
router = Router(name="support_bot")
router.include_routers(form.router, menu.router, errors)

__all__ = ["router", "settings_model"]
