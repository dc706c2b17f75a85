"""The lowest level logged, one process-wide value every logger reads on every call.

Why the level lives in a module global rather than in the logger class: structlog's
filtering loggers fix the level in their class, and a logger bound once per actor
(`log.bind(bot_id=...)`) or cached on first use would never see a reload. Our wrapper
class (`GatedLogger`) is the NOTSET filtering logger with each method gated on `_level`,
so a call below the level still costs one comparison, and `set_level` reaches every
logger. Imports nothing of ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import structlog
from structlog.typing import FilteringBoundLogger

_LEVELS: Final[dict[str, int]] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

#: The lowest level logged; read by every gated logger method on every call.
_level: int = logging.INFO


def _gate(
    level: int, sync: Callable[..., Any], asyn: Callable[..., Any]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def meth(self: Any, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if level < _level:
            return None
        return sync(self, event, *args, **kw)

    async def ameth(self: Any, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if level < _level:
            return None
        return await asyn(self, event, *args, **kw)

    return meth, ameth


def _make_gated_logger() -> type[FilteringBoundLogger]:
    ungated: Any = structlog.make_filtering_bound_logger(logging.NOTSET)
    meths: dict[str, Any] = {}
    for name, level in _LEVELS.items():
        lower = name.lower()
        meths[lower], meths[f"a{lower}"] = _gate(
            level, getattr(ungated, lower), getattr(ungated, f"a{lower}")
        )
    for alias, target in (("warn", "warning"), ("fatal", "critical"), ("msg", "info")):
        meths[alias], meths[f"a{alias}"] = meths[target], meths[f"a{target}"]

    def log(self: Any, level: int, event: str, *args: Any, **kw: Any) -> Any:
        if level < _level:
            return None
        return ungated.log(self, level, event, *args, **kw)

    async def alog(self: Any, level: int, event: str, *args: Any, **kw: Any) -> Any:
        if level < _level:
            return None
        return await ungated.alog(self, level, event, *args, **kw)

    meths.update(
        log=log,
        alog=alog,
        is_enabled_for=lambda self, level: level >= _level,
        get_effective_level=lambda self: _level,
    )
    # `exception`/`aexception` are inherited and call the gated `error`.
    return type("BoundLoggerGated", (ungated,), meths)


#: structlog's wrapper class for every logger of ours (see the module docstring).
GatedLogger: Final = _make_gated_logger()


def level_number(level: str | int) -> int:
    """A level name (any case) or number as the stdlib's number; ValueError if unknown."""
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.upper()]
    except KeyError:
        allowed = ", ".join(_LEVELS)
        raise ValueError(f"unknown log level {level!r}; use one of {allowed}") from None


def gate_at(number: int) -> None:
    """Set the level every gated logger reads (the stdlib root logger is left alone)."""
    global _level
    _level = number


def set_level(level: str | int) -> None:
    """Change the lowest level logged, for structlog and stdlib alike; takes effect at once.

    Runs on config reload in any thread; existing and cached loggers follow it.
    """
    number = level_number(level)
    gate_at(number)
    logging.getLogger().setLevel(number)
