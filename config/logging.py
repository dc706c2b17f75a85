"""Logging: structlog for our code, stdlib records rendered by the same chain, secrets redacted.

Runs in every process (master and each worker) at start, and again on config reload.
Every line has one shape: JSON (orjson) when the stream is not a TTY or `fmt="json"`,
structlog's ConsoleRenderer on a TTY. Imports nothing of ours.

Why the level lives in a module global rather than in the logger class: structlog's
filtering loggers fix the level in their class, and a logger bound once per actor
(`log.bind(bot_id=...)`) or cached on first use would never see a reload. Our wrapper
class is the NOTSET filtering logger with each method gated on `_level`, so a call
below the level still costs one comparison, and `set_level` reaches every logger.
For the same reason the output object and the processor list are stable: reconfigure
swaps the stream and mutates the list in place (as `structlog.testing.capture_logs` does).

Redaction by construction: every finished line, whoever logged it, passes `_write_line`,
which masks every secret (config/redact.py) before writing. Values in the event dict
are masked too, for processors and test captures that see the dict.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, Final, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from config.redact import redact

__all__ = [
    "configure_logging",
    "flush_logging",
    "redact_tokens",
    "reset_logging",
    "set_level",
]

_MAX_DEPTH: Final = 8

_LEVELS: Final[dict[str, int]] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

#: The lowest level logged; read by every gated logger method on every call.
_level: int = logging.INFO
_stream: TextIO | None = None
_handler: logging.Handler | None = None
_write_lock: Final = threading.Lock()
#: Lines a daemon may queue for its writer thread before it drops (and counts) new ones.
QUEUE_MAX = 20_000


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
    # Subclasses (namedtuples, custom mappings) are left whole; `_write_line` masks them.
    return value


def redact_tokens(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Mask secrets in every string value, nested ones and exception text included.

    A safety net: code binds `bot_id`, never the token (STYLE 15). Objects that are not
    strings (a URL, an exception) are caught after rendering, in `_write_line`.
    """
    for key, value in event_dict.items():
        event_dict[key] = _scrub(value, 0)
    return event_dict


def _orjson_dumps(obj: Any, **kwargs: Any) -> str:
    """One JSON line; a value orjson refuses (an int beyond 64 bits, a cycle) is written
    with its repr instead, because logging must never raise into the code that logged."""
    try:
        return orjson.dumps(obj, **kwargs).decode()
    except (TypeError, orjson.JSONEncodeError):
        try:
            return json.dumps(obj, default=repr, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return json.dumps({"event": "log.unserialisable", "repr": repr(obj)[:2000]})


def _write_line(line: str) -> None:
    """Write one finished line to the current stream; called from any thread.

    Native structlog events and stdlib records share this lock so lines never interleave.
    Every secret is masked here, so no logger can write one. A closed or broken stream
    must not raise into the code that logged.
    """
    _emit(redact(line))


def _emit(line: str) -> None:
    writer = _writer
    if writer is not None and writer.put(line):
        return
    _write_now(line)


def _write_now(text: str) -> None:
    stream = _stream if _stream is not None else sys.stderr
    with _write_lock, suppress(OSError, ValueError):
        stream.write(text + "\n")
        stream.flush()


class _BackgroundWriter:
    """Daemons log through a thread: a slow or stalled stderr (a full pipe to journald)
    must not block the event loop. `logging.handlers.QueueListener` does the same for
    stdlib handlers; ours takes finished lines, so both of our chains share it.

    The queue is bounded: when the stream cannot keep up, new lines are dropped and
    counted, and one line says how many once writing works again.
    """

    def __init__(self, maxsize: int | None = None) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize or QUEUE_MAX)
        self.dropped = 0  # ever; only the producers add (under the lock), the writer reads
        self._reported = 0
        self._dropped_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def put(self, line: str) -> bool:
        """Queue a line; False once stopped (the caller writes it itself)."""
        if not self._thread.is_alive():
            return False
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            with self._dropped_lock:  # the slow path only
                self.dropped += 1
        return True

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            with suppress(queue.Empty):
                while len(batch) < 512:
                    batch.append(self._queue.get_nowait())
            stop = batch[-1] is None
            lines = [line for line in batch if line is not None]
            dropped = self.dropped
            if dropped > self._reported:
                lines.append(_dropped_line(dropped - self._reported))
                self._reported = dropped
            if lines:
                _write_now("\n".join(lines))
            if stop:
                return

    def stop(self, timeout: float) -> None:
        """Write what is queued (up to `timeout` seconds), then stop the thread."""
        if not self._thread.is_alive():
            return
        with suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)


def _dropped_line(count: int) -> str:
    event = {
        "event": "log.dropped",
        "count": count,
        "reason": "the log stream could not keep up",
        "level": "warning",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return _orjson_dumps(event)


_writer: _BackgroundWriter | None = None


def flush_logging(timeout: float = 2.0) -> None:
    """Write every queued line and go back to writing in the caller's thread.

    Called at exit (atexit) and before a daemon prints its last words to stderr.
    """
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        writer.stop(timeout)


class _Output:
    """The structlog logger object: one per name, stable across reconfigure."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "botvisor"

    def msg(self, message: str) -> None:
        _write_line(message)

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


class _SharedStream:
    """What the stdlib handler writes to: the same stream and lock as `_Output`."""

    def write(self, text: str) -> None:
        _write_line(text.removesuffix("\n"))

    def flush(self) -> None:
        """Each write already flushed."""


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


_GatedLogger: Final = _make_gated_logger()


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.upper()]
    except KeyError:
        allowed = ", ".join(_LEVELS)
        raise ValueError(f"unknown log level {level!r}; use one of {allowed}") from None


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


Renderer = Callable[[WrappedLogger, str, EventDict], str | bytes]


def _renderer(fmt: str, stream: TextIO) -> Renderer:
    if fmt == "auto":
        fmt = "console" if _is_tty(stream) else "json"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=_is_tty(stream))
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    raise ValueError(f"unknown log format {fmt!r}; use auto, json or console")


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
    global _level, _stream, _handler, _writer
    number = _level_number(level)
    target = stream if stream is not None else sys.stderr
    renderer = _renderer(fmt, target)

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
    handler = logging.StreamHandler(_SharedStream())
    handler.setFormatter(formatter)

    with _write_lock:
        _stream = stream
    _level = number
    # Bound and cached loggers hold a reference to this list: mutate it, don't replace it.
    processors = structlog.get_config()["processors"]
    if not isinstance(processors, list):
        processors = []
    processors[:] = native
    structlog.configure(
        processors=processors,
        wrapper_class=_GatedLogger,
        context_class=dict,
        logger_factory=_Output,
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
    if background and _writer is None:
        _writer = _BackgroundWriter()
        atexit.register(flush_logging)


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """sys.excepthook: the last-resort traceback as one redacted line, not raw stderr."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    structlog.get_logger("botvisor").critical("uncaught", exc_info=(kind, exc, tb))


def set_level(level: str | int) -> None:
    """Change the lowest level logged, for structlog and stdlib alike; takes effect at once.

    Runs on config reload in any thread; existing and cached loggers follow it.
    """
    global _level
    number = _level_number(level)
    _level = number
    logging.getLogger().setLevel(number)


def reset_logging() -> None:
    """Undo `configure_logging`: remove our handler, restore structlog's defaults.

    For tests and for embedding botvisor in another program's logging.
    """
    global _level, _stream, _handler
    flush_logging()
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    logging.captureWarnings(False)
    sys.excepthook = sys.__excepthook__
    with _write_lock:
        _stream = None
    _level = logging.NOTSET
    ours: list[Processor] = structlog.get_config()["processors"]
    structlog.reset_defaults()
    # Loggers cached while we were configured still hold our list: give it the defaults.
    ours[:] = structlog.get_config()["processors"]
