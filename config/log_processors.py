"""The structlog processors that shape a log line: secrets masked in the event dict,
then JSON (orjson) or structlog's console renderer. Imports nothing of ours but the
redactor."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, TextIO

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from config.redact import redact

_MAX_DEPTH: Final = 8


def _scrub(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth >= _MAX_DEPTH:
        return value
    kind = type(value)
    if kind is dict:
        return {k: _scrub(v, depth + 1) for k, v in value.items()}
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return kind(_scrub(v, depth + 1) for v in value)
    # Subclasses (namedtuples, custom mappings) are left whole; `write_line` masks them.
    return value


def redact_tokens(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Mask secrets in every string value, nested ones and exception text included.

    A safety net: code binds `bot_id`, never the token (STYLE 15). Objects that are not
    strings (a URL, an exception) are caught after rendering, in
    `config.log_output.write_line`.
    """
    for key, value in event_dict.items():
        event_dict[key] = _scrub(value, 0)
    return event_dict


def orjson_dumps(obj: Any, **kwargs: Any) -> str:
    """One JSON line; a value orjson refuses (an int beyond 64 bits, a cycle) is written
    with its repr instead, because logging must never raise into the code that logged."""
    try:
        return orjson.dumps(obj, **kwargs).decode()
    except (TypeError, orjson.JSONEncodeError):
        try:
            return json.dumps(obj, default=repr, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return json.dumps({"event": "log.unserialisable", "repr": repr(obj)[:2000]})


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


Renderer = Callable[[WrappedLogger, str, EventDict], str | bytes]


def renderer_for(fmt: str, stream: TextIO) -> Renderer:
    """The last processor: `auto` is console on a TTY (colored), JSON otherwise."""
    if fmt == "auto":
        fmt = "console" if _is_tty(stream) else "json"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=_is_tty(stream))
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=orjson_dumps)
    raise ValueError(f"unknown log format {fmt!r}; use auto, json or console")
