"""What every bot's `settings` object may hold, whatever its handler.

Each handler declares its settings model in bots/handlers/registry.py (`SETTINGS`): a
subclass of `BotSettings`, so `ratelimit` is allowed everywhere and any other key must
be the handler's own. Registration and updates are checked against it (`check_settings`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class BotSettings(BaseModel):
    """Settings any bot takes: per-bot rate limits. A handler's model adds its own keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ratelimit: dict[str, Any] | None = Field(
        None,
        description='This bot\'s own rate limits over [ratelimit], e.g. {"per_bot": '
        '{"limit": 1000}} (same keys and rules as the config file).',
    )


def describe(err: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One line per problem, naming the key and what is allowed."""
    out = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(settings)"
        if e["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields)) if model is not None else ""
            out.append(f"{key}: unknown setting" + (f"; known: {known}" if known else ""))
        else:
            out.append(f"{key}: {e['msg'].lower()}, got {e['input']!r}")
    return out
