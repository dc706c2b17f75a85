"""Turning form fields into service calls, and service errors into messages next to the
field they are about. Pure functions: no I/O."""

from __future__ import annotations

import json
from typing import Any, Final

from supervisor.registry.bot_service_errors import BotServiceError

#: which form field a BotService error code is about (others go above the form)
_FIELD_OF_CODE: Final = {
    "invalid_token": "token",
    "token_rejected": "token",
    "token_of_another_bot": "token",
    "already_registered": "token",
    "unknown_handler": "handler",
    "handler_unavailable": "handler",
    "unknown_owner": "owner",
    "invalid_settings": "settings",
}
#: settings keys that have a field of their own on the settings form
OWN_FIELDS: Final = ("system_prompt",)


class FormError(Exception):
    """A value the form itself can tell is wrong: shown next to `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def errors_of(exc: BotServiceError | FormError) -> dict[str, str]:
    """{field: message} for the template; "" is the form as a whole."""
    if isinstance(exc, FormError):
        return {exc.field: exc.message}
    field = _FIELD_OF_CODE.get(exc.code, "")
    if exc.code == "forbidden":
        field = "owner" if exc.message.startswith("owner:") else "handler"
    if field == "settings":
        for own in OWN_FIELDS:
            if f"{own}:" in exc.message or f"{own} " in exc.message:
                field = own
    return {field: exc.message}


def parse_settings(text: str, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings textarea (a JSON object; empty: {}) with per-key fields laid over it."""
    text = text.strip()
    if not text:
        settings: Any = {}
    else:
        try:
            settings = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            message = getattr(exc, "msg", "nested too deeply")
            raise FormError("settings", f"settings: not valid JSON ({message})") from None
    if not isinstance(settings, dict):
        raise FormError("settings", "settings: give a JSON object, e.g. {}")
    for key, value in (overrides or {}).items():
        if value.strip():
            settings[key] = value
        else:
            settings.pop(key, None)
    return settings


def settings_text(settings: dict[str, Any], without: tuple[str, ...] = ()) -> str:
    """The textarea's content: the settings as indented JSON, minus keys with own fields."""
    shown = {k: v for k, v in settings.items() if k not in without}
    return json.dumps(shown, indent=2, ensure_ascii=False) if shown else ""
