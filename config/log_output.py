"""Where every finished log line goes: one writer for structlog and stdlib alike.

Redaction by construction: every finished line, whoever logged it, passes `write_line`,
which masks every secret (config/redact.py) before writing. Lines never interleave
(one lock), and a closed or broken stream never raises into the code that logged.
Daemons write through a background thread (`start_background`), so a stalled stream
never blocks their event loop. Imports nothing of ours but the redactor and
`orjson_dumps`.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import time
from contextlib import suppress
from typing import Final, TextIO

from config.log_processors import orjson_dumps
from config.redact import redact

#: The stream lines go to; None: sys.stderr as it is at the time of writing.
_stream: TextIO | None = None
_write_lock: Final = threading.Lock()
#: Lines a daemon may queue for its writer thread before it drops (and counts) new ones.
QUEUE_MAX = 20_000


def set_stream(stream: TextIO | None) -> None:
    """Write to `stream` from now on (None: sys.stderr); called on (re)configure."""
    global _stream
    with _write_lock:
        _stream = stream


def write_line(line: str) -> None:
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
    return orjson_dumps(event)


_writer: _BackgroundWriter | None = None


def start_background() -> None:
    """Write lines from a thread from now on (daemons); queued lines are written at exit."""
    global _writer
    if _writer is None:
        _writer = _BackgroundWriter()
        atexit.register(flush_logging)


def flush_logging(timeout: float = 2.0) -> None:
    """Write every queued line and go back to writing in the caller's thread.

    Called at exit (atexit) and before a daemon prints its last words to stderr.
    """
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        writer.stop(timeout)


class Output:
    """The structlog logger object: one per name, stable across reconfigure."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "botvisor"

    def msg(self, message: str) -> None:
        write_line(message)

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


class SharedStream:
    """What the stdlib handler writes to: the same stream and lock as `Output`."""

    def write(self, text: str) -> None:
        write_line(text.removesuffix("\n"))

    def flush(self) -> None:
        """Each write already flushed."""
