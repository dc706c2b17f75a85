"""What every bot's `settings` object may hold, whatever its handler.

Each handler declares its settings model in bots/handlers/registry.py (`SETTINGS`): a
subclass of `BotSettings`, so `ratelimit` and `telegram` are allowed everywhere and any other key must
be the handler's own. Registration and updates are checked against it (`check_settings`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class BotSettings(BaseModel):
    """Settings any bot takes: per-bot rate limits and way to the Bot API. A handler's
    model adds its own keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ratelimit: dict[str, Any] | None = Field(
        None,
        description='This bot\'s own rate limits over [ratelimit], e.g. {"per_bot": '
        '{"limit": 1000}} (same keys and rules as the config file).',
    )
    telegram: dict[str, Any] | None = Field(
        None,
        description='Where this bot reaches the Bot API, over [telegram]: {"api_base": '
        '"http://127.0.0.1:8081", "proxy": "socks5://user:password@host:1080"} (a proxy '
        "of null turns the deployment's off; `bots move-api` sets api_base).",
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
