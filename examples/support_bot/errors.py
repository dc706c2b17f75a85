"""The error handler: any exception in this bot's handlers ends here."""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.types import ErrorEvent

log = logging.getLogger(__name__)
errors = Router(name="support_errors")


@errors.error()
async def on_error(event: ErrorEvent) -> None:
    log.info("support_bot: %s: %s", type(event.exception).__name__, event.exception)
    message = event.update.message
    if message is not None:
        await message.answer("Sorry, something went wrong on our side. Try /start again.")
