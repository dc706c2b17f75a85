"""Echo: answer every text message with its own text, as a reply to it."""

from __future__ import annotations

from bots.handlers.base import BotContext
from bots.telegram.update import Incoming


class EchoHandler:
    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        text = update.text
        if text is None:
            return
        await ctx.api.send_message(update.chat_id, text, reply_to=update.message_id)
