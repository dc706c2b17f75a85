"""Logging: structlog for our code, stdlib records rendered by the same chain, secrets redacted.

Runs in every process (master and each worker) at start, and again on config reload.
Every line has one shape: JSON (orjson) when the stream is not a TTY or `fmt="json"`,
structlog's ConsoleRenderer on a TTY. Imports nothing of ours but its parts:
log_levels.py (the live level every logger reads), log_processors.py (redaction of the
event dict, renderers) and log_output.py (the one writer every line passes, masking
secrets, in a thread for daemons).

The output object and the processor list are stable across calls: reconfigure swaps the
stream and mutates the list in place (as `structlog.testing.capture_logs` does), so a
logger bound or cached before a reload writes with the new format, level and stream.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Literal, TextIO

import structlog
from structlog.typing import Processor

from config import log_output
from config.log_levels import GatedLogger, gate_at, level_number
from config.log_processors import redact_tokens, renderer_for

__all__ = ["configure_logging", "reset_logging"]

_handler: logging.Handler | None = None


def configure_logging(
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    stream: TextIO | None = None,
    background: bool = False,
) -> None:
    """Set up structlog and the stdlib root logger; safe to call again on reload.

    Runs in the main thread of any of our processes, before or after the loop starts.
    `stream` defaults to sys.stderr. Loggers made or cached before a reconfigure
    write with the new format, level and stream. `background` (daemons): lines are
    written by a thread, so a stalled stream never blocks the caller; queued lines are
    written at exit.
    """
    global _handler
    number = level_number(level)
    target = stream if stream is not None else sys.stderr
    renderer = renderer_for(fmt, target)

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # Both chains end with the same tail, so every line has one shape.
    tail: list[Processor] = [
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_tokens,
        renderer,
    ]
    native: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
        *tail,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(log_output.SharedStream())
    handler.setFormatter(formatter)

    log_output.set_stream(stream)
    gate_at(number)
    # Bound and cached loggers hold a reference to this list: mutate it, don't replace it.
    processors = structlog.get_config()["processors"]
    if not isinstance(processors, list):
        processors = []
    processors[:] = native
    structlog.configure(
        processors=processors,
        wrapper_class=GatedLogger,
        context_class=dict,
        logger_factory=log_output.Output,
        cache_logger_on_first_use=True,
    )

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(number)
    _handler = handler
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught  # a traceback escaping main goes through the redactor too
    if background:
        log_output.start_background()


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """sys.excepthook: the last-resort traceback as one redacted line, not raw stderr."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    structlog.get_logger("botvisor").critical("uncaught", exc_info=(kind, exc, tb))


def reset_logging() -> None:
    """Undo `configure_logging`: remove our handler, restore structlog's defaults.

    For tests and for embedding botvisor in another program's logging.
    """
    global _handler
    log_output.flush_logging()
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    logging.captureWarnings(False)
    sys.excepthook = sys.__excepthook__
    log_output.set_stream(None)
    gate_at(logging.NOTSET)
    ours: list[Processor] = structlog.get_config()["processors"]
    structlog.reset_defaults()
    # Loggers cached while we were configured still hold our list: give it the defaults.
    ours[:] = structlog.get_config()["processors"]
