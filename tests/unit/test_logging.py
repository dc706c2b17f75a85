"""config.logging: one line shape for structlog and stdlib, tokens never printed, live level."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog

from config.log_levels import set_level
from config.logging import configure_logging, reset_logging

SECRET = "AAH1bC-dEfGhIjKlMnOpQrStUvWxYz_0123456"
TOKEN = f"123456789:{SECRET}"
MASKED = "123456789:***"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    yield stream
    reset_logging()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_redacted(stream: io.StringIO) -> None:
    text = stream.getvalue()
    assert SECRET not in text
    assert MASKED in text


def test_token_in_event_is_masked_but_bot_id_kept(out: io.StringIO) -> None:
    structlog.get_logger("t").info(f"polling with {TOKEN}")

    assert_redacted(out)
    assert lines(out)[0]["event"] == f"polling with {MASKED}"


def test_token_in_positional_args_is_masked(out: io.StringIO) -> None:
    structlog.get_logger("t").warning("url %s", f"https://api.telegram.org/bot{TOKEN}/getMe")

    assert_redacted(out)


def test_token_in_keyword_and_nested_values_is_masked(out: io.StringIO) -> None:
    structlog.get_logger("t").info(
        "request", url=f"/bot{TOKEN}/getMe", nested={"calls": [(TOKEN, 1)], "set": {TOKEN}}
    )

    assert_redacted(out)
    (line,) = lines(out)
    assert line["url"] == f"/bot{MASKED}/getMe"
    assert line["nested"] == {"calls": [[MASKED, 1]], "set": f"{{'{MASKED}'}}"}


def test_token_in_bound_context_is_masked(out: io.StringIO) -> None:
    structlog.get_logger("t").bind(leaked=TOKEN).info("bound")

    assert_redacted(out)


def test_token_in_repr_of_a_non_string_value_is_masked(out: io.StringIO) -> None:
    class Url:
        def __repr__(self) -> str:
            return f"URL('https://api.telegram.org/bot{TOKEN}/getUpdates')"

    structlog.get_logger("t").error("network error", url=Url())

    assert_redacted(out)


def test_token_in_exception_message_and_traceback_is_masked(out: io.StringIO) -> None:
    log = structlog.get_logger("t")
    try:
        raise RuntimeError(f"401 for https://api.telegram.org/bot{TOKEN}/getMe")
    except RuntimeError:
        log.exception("getMe failed")

    assert_redacted(out)
    (line,) = lines(out)
    assert line["level"] == "error"
    assert "RuntimeError: 401 for" in str(line["exception"])


def test_token_in_stdlib_record_is_masked(out: io.StringIO) -> None:
    logging.getLogger("aiohttp.client").warning("retrying %s", f"/bot{TOKEN}/sendMessage")
    try:
        raise ConnectionError(TOKEN)
    except ConnectionError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")

    assert_redacted(out)
    first, second = lines(out)
    assert first["logger"] == "aiohttp.client"
    assert first["level"] == "warning"
    assert second["logger"] == "asyncio"
    assert f"ConnectionError: {MASKED}" in str(second["exception"])


def test_json_mode_writes_one_valid_object_per_line_with_level_event_timestamp(
    out: io.StringIO,
) -> None:
    structlog.get_logger("bots.actor.actor").info("actor.state", old="starting", new="running")
    logging.getLogger("asyncpg").warning("pool closing")

    parsed = lines(out)
    assert [p["event"] for p in parsed] == ["actor.state", "pool closing"]
    assert [p["level"] for p in parsed] == ["info", "warning"]
    assert [p["logger"] for p in parsed] == ["bots.actor.actor", "asyncpg"]
    for p in parsed:
        stamp = datetime.fromisoformat(str(p["timestamp"]))
        assert stamp.utcoffset() is not None


def test_set_level_hides_debug_then_shows_it_for_existing_bound_loggers(
    out: io.StringIO,
) -> None:
    log = structlog.get_logger("t").bind(bot_id=7)
    cached = structlog.get_logger("module")
    log.debug("first")
    cached.debug("cached first")
    logging.getLogger("aiohttp").debug("std first")
    assert out.getvalue() == ""

    set_level("DEBUG")
    log.debug("second")
    cached.debug("cached second")
    logging.getLogger("aiohttp").debug("std second")
    assert [p["event"] for p in lines(out)] == ["second", "cached second", "std second"]
    assert lines(out)[0]["bot_id"] == 7

    set_level("WARNING")
    log.info("third")
    cached.info("cached third")
    assert len(lines(out)) == 3


def test_reconfigure_does_not_duplicate_stdlib_lines(out: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=out)
    configure_logging("INFO", "json", stream=out)

    logging.getLogger("aiohttp").warning("once")

    assert len(lines(out)) == 1


def test_reconfigure_moves_cached_loggers_to_the_new_stream_and_format(
    out: io.StringIO,
) -> None:
    log = structlog.get_logger("t")
    log.info("before")
    second = io.StringIO()

    configure_logging("INFO", "console", stream=second)
    log.info("after", token=TOKEN)

    assert [p["event"] for p in lines(out)] == ["before"]
    text = second.getvalue()
    assert "after" in text
    assert SECRET not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "is_json"), [(io.StringIO(), True), (_Tty(), False)])
def test_auto_format_is_json_unless_the_stream_is_a_tty(stream: io.StringIO, is_json: bool) -> None:
    configure_logging("INFO", "auto", stream=stream)
    try:
        structlog.get_logger("t").info("hello", token=TOKEN)
    finally:
        reset_logging()

    text = stream.getvalue()
    assert SECRET not in text
    assert ("{" in text and json.loads(text)["event"] == "hello") is is_json


def test_capture_logs_still_sees_events_after_configure(out: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.info("warm the cache")

    with structlog.testing.capture_logs() as captured:
        log.info("captured", bot_id=3)

    assert captured == [{"event": "captured", "bot_id": 3, "log_level": "info"}]


def test_unknown_level_names_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="DEBUG, INFO, WARNING, ERROR, CRITICAL"):
        set_level("LOUD")
