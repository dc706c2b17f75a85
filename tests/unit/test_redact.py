"""Every secret kind is masked in every line, whoever logs it (config/redact.py)."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator

import pytest

from config import load_settings
from config.logging import configure_logging, reset_logging
from config.redact import contains_secret, redact

ADMIN = "adm-" + secrets.token_urlsafe(32)
ENC = "k" * 43 + "="
OWNER_KEY = "bvo_12_" + secrets.token_urlsafe(32)
TOKEN = "123456:" + "A" * 35
OPENAI = "sk-proj-" + secrets.token_urlsafe(24)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    load_settings(
        environ={},
        overrides={
            "security": {"admin_key": ADMIN, "encryption_key": ENC},
            "openai": {"api_key": "opaque-openai-credential-77"},
            "database": {"url": "postgresql://bv:pg-pass-0123@db/botvisor"},
        },
    )
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    yield stream
    reset_logging()


@pytest.mark.parametrize(
    "secret",
    [ADMIN, ENC, OWNER_KEY, TOKEN, OPENAI, "opaque-openai-credential-77", "pg-pass-0123"],
    # fixed ids: the secrets are random, and test ids must be the same in every process
    # (pytest-xdist compares its workers' collections); a secret in a test id would also
    # show in reports
    ids=["admin", "encryption", "owner", "token", "openai", "openai-opaque", "pg-password"],
)
@pytest.mark.parametrize(
    "logger", ["botvisor", "aiohttp.server", "aiohttp.access", "asyncpg", "redis", "openai"]
)
def test_every_secret_kind_is_masked_in_every_logger(
    out: io.StringIO, secret: str, logger: str
) -> None:
    logging.getLogger(logger).error("saw %r and %s and %s", secret.encode(), secret, [secret])

    text = out.getvalue()
    assert secret not in text
    assert "***" in text


def test_a_url_password_is_masked_but_the_host_kept() -> None:
    line = redact("connect redis://:hunter2@cache:6379/0 failed")
    assert line == "connect redis://:***@cache:6379/0 failed"


def test_an_authorization_header_is_masked_in_any_spelling() -> None:
    for raw in ("Authorization: Bearer abc", "b'Authorization : Bearer abc\\r\\n'", "bearer abc"):
        assert "abc" not in redact(raw), raw


def test_ordinary_text_is_left_alone() -> None:
    for text in ("bot 123456 started", "2026-12-02T10:30:00Z", "worker 3 ready", "ctx:1:2:dialog"):
        assert not contains_secret(text)
        assert redact(text) == text


def test_a_value_json_cannot_hold_is_logged_not_raised(out: io.StringIO) -> None:
    import structlog

    structlog.get_logger("t").info("chat.released", chat_id=-(2**63) - 1, huge=2**70)

    line = out.getvalue().strip()
    assert str(-(2**63) - 1) in line and str(2**70) in line
