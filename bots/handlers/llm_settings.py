"""Per-bot settings of the `openai` handler: a pydantic model, checked at registration.

`bots add/update`, the admin API and the manager bot validate a bot's settings against
this model (bots/handlers/registry.py: `check_settings`), so unknown keys and bad values
are refused there. At run time a value that is bad anyway (an older row) is reported
(once per settings revision) and replaced by its default, so a typo in one bot's
settings never stops it answering.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import Field, ValidationError

from bots.handlers.settings import BotSettings, describe

DEFAULT_SYSTEM_PROMPT: Final = "You are a helpful assistant. Answer briefly."
DEFAULT_FALLBACK: Final = (
    "Sorry, I can't answer right now. Please try again in a minute, or send /operator "
    "to reach a human."
)
DEFAULT_GREETING: Final = (
    "Hi! Ask me anything. /reset makes me forget our conversation; /operator calls a human."
)


class LLMBotSettings(BotSettings):
    """Settings of an `openai` bot (`--set KEY=VALUE`, the API's `settings` object)."""

    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, min_length=1, description="System prompt.")
    model: str | None = Field(None, min_length=1, description="Model; unset: openai.model.")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    max_history_messages: int = Field(
        20, ge=1, le=10_000, description="Messages of history sent with each question."
    )
    max_tokens: int | None = Field(None, ge=1, le=1_000_000, description="Longest answer.")
    context_window_tokens: int | None = Field(
        None,
        ge=256,
        le=10_000_000,
        description="The model's context window; unset: openai.context_window_tokens.",
    )
    handoff_keyword: str | None = Field(
        None, min_length=1, description="A word that hands the chat to a human operator."
    )
    greeting: str = Field(DEFAULT_GREETING, min_length=1, description="Answer to /start.")
    fallback_text: str = Field(
        DEFAULT_FALLBACK, min_length=1, description="Answer when the LLM cannot answer."
    )

    def wants_handoff(self, text: str) -> bool:
        kw = self.handoff_keyword
        return bool(kw) and kw.casefold() in text.casefold()  # type: ignore[union-attr]


def parse_settings(raw: Mapping[str, Any]) -> tuple[LLMBotSettings, list[str]]:
    """The handler's settings and a list of problems; bad keys fall back to their defaults."""
    try:
        return LLMBotSettings.model_validate(dict(raw)), []
    except ValidationError as err:
        bad = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
        good = {k: v for k, v in raw.items() if k not in bad}
        return LLMBotSettings.model_validate(good), describe(err)
