"""This bot's own settings (beside `ratelimit`, which every bot has)."""

from __future__ import annotations

from pydantic import Field

from bots.handlers.settings import BotSettings


class SupportSettings(BotSettings):
    greeting: str = Field(
        "Hello! I am the support bot. What can I do for you?",
        max_length=500,
        description="First line of the /start answer.",
    )
    team: str = Field("the support team", max_length=100, description="Who reads the forms.")
