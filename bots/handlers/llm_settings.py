"""Per-bot settings of the `openai` handler, read from the bot's settings mapping.

A bad value is reported (once per settings revision) and replaced by its default,
so a typo in one bot's settings never stops it answering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

DEFAULT_SYSTEM_PROMPT: Final = "You are a helpful assistant. Answer briefly."
DEFAULT_FALLBACK: Final = (
    "Sorry, I can't answer right now. Please try again in a minute, or send /operator "
    "to reach a human."
)
DEFAULT_GREETING: Final = (
    "Hi! Ask me anything. /reset makes me forget our conversation; /operator calls a human."
)


@dataclass(frozen=True, slots=True)
class LLMBotSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    model: str | None = None  # None: the deployment's openai.model
    temperature: float | None = None
    max_history_messages: int = 20
    max_tokens: int | None = None
    #: the bot's model's context window (None: the deployment's openai.context_window_tokens)
    context_window_tokens: int | None = None
    handoff_keyword: str | None = None
    greeting: str = DEFAULT_GREETING
    fallback_text: str = DEFAULT_FALLBACK

    def wants_handoff(self, text: str) -> bool:
        kw = self.handoff_keyword
        return bool(kw) and kw.casefold() in text.casefold()  # type: ignore[union-attr]


def _text(raw: Mapping[str, Any], name: str, problems: list[str]) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return value
    problems.append(f"{name}: expected a non-empty string")
    return None


def _number(
    raw: Mapping[str, Any], name: str, lo: float, hi: float, problems: list[str], *, integer: bool
) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        problems.append(f"{name}: expected {kind} from {lo:g} to {hi:g}, got {value!r}")
        return None
    return value


def parse_settings(raw: Mapping[str, Any]) -> tuple[LLMBotSettings, list[str]]:
    """The handler's settings and a list of problems (each names the key and what is allowed)."""
    problems: list[str] = []
    d = LLMBotSettings()
    history = _number(raw, "max_history_messages", 1, 10_000, problems, integer=True)
    max_tokens = _number(raw, "max_tokens", 1, 1_000_000, problems, integer=True)
    window = _number(raw, "context_window_tokens", 256, 10_000_000, problems, integer=True)
    settings = LLMBotSettings(
        system_prompt=_text(raw, "system_prompt", problems) or d.system_prompt,
        model=_text(raw, "model", problems),
        temperature=_number(raw, "temperature", 0, 2, problems, integer=False),
        max_history_messages=int(history) if history is not None else d.max_history_messages,
        max_tokens=int(max_tokens) if max_tokens is not None else None,
        context_window_tokens=int(window) if window is not None else None,
        handoff_keyword=_text(raw, "handoff_keyword", problems),
        greeting=_text(raw, "greeting", problems) or d.greeting,
        fallback_text=_text(raw, "fallback_text", problems) or d.fallback_text,
    )
    return settings, problems
