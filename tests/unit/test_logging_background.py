"""config.log_output's background writer: a daemon's loop never waits on a stalled log stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

import config.log_output as log_output
from config.log_output import flush_logging
from config.logging import configure_logging, reset_logging


class StalledStream:
    """A stream whose writes block until released, like a full pipe to journald."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.text: list[str] = []

    def write(self, text: str) -> int:
        assert self.release.wait(30), "the stream was never released"
        self.text.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in "".join(self.text).splitlines()]


@pytest.fixture
def stalled() -> Iterator[StalledStream]:
    stream = StalledStream()
    configure_logging("INFO", "json", stream=stream, background=True)  # type: ignore[arg-type]
    yield stream
    stream.release.set()
    reset_logging()


def test_logging_returns_while_the_stream_is_stalled_and_every_line_arrives_in_order(
    stalled: StalledStream,
) -> None:
    log = structlog.get_logger("t")
    for i in range(200):
        log.info("line", n=i)  # a synchronous writer would block here on the first line
    assert stalled.text == []  # nothing written yet: the stream is still stalled
    stalled.release.set()
    flush_logging()
    assert [line["n"] for line in stalled.lines()] == list(range(200))


def test_a_full_queue_drops_new_lines_and_says_how_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(log_output, "QUEUE_MAX", 50)
    stream = StalledStream()
    configure_logging("INFO", "json", stream=stream, background=True)  # type: ignore[arg-type]
    try:
        log = structlog.get_logger("t")
        for i in range(500):
            log.info("line", n=i)
        stream.release.set()
        flush_logging()
        got = stream.lines()
    finally:
        stream.release.set()
        reset_logging()
    kept = [line["n"] for line in got if line["event"] == "line"]
    dropped = [line for line in got if line["event"] == "log.dropped"]
    assert kept == sorted(kept) and 50 <= len(kept) < 500  # the oldest kept, in order
    assert dropped and sum(line["count"] for line in dropped) == 500 - len(kept)


def test_after_flush_lines_are_written_by_the_caller_again(stalled: StalledStream) -> None:
    stalled.release.set()
    flush_logging()
    structlog.get_logger("t").info("after")
    assert [line["event"] for line in stalled.lines()] == ["after"]
