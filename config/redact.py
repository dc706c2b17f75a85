"""Secrets never reach a log line: one redactor for every line of every logger.

Runs in every process, from any thread. Two kinds of secret are masked:

* **shapes** that are secret wherever they appear: bot tokens (`<id>:<secret>` -> `<id>:***`),
  owner keys (`bvo_<id>_<secret>` -> `bvo_<id>_***`), OpenAI keys (`sk-…`), the password
  of a URL (`scheme://user:***@host`) and the value of an `Authorization` header;
* **values** this process knows: every `SecretStr` of every `Settings` built here is
  remembered (`remember`, called by the Settings model itself), so the admin key and the
  encryption keys are masked even though they have no shape. Each value is also masked
  in its escaped spellings (JSON, `repr` of str and bytes), because a logged exception
  shows a raw request line as a bytes literal.

config/log_output.py applies `redact` to each finished line just before it is written, so
no logger (ours, aiohttp's, asyncpg's, redis', openai's) can bypass it. Imports nothing
of ours.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Final

import orjson

__all__ = ["MASK", "contains_secret", "forget_all", "known_secrets", "redact", "remember"]

MASK: Final = "***"
#: Values shorter than this are never remembered: masking them would garble ordinary text.
MIN_SECRET_LEN: Final = 8

#: (a substring every match holds, lowercase; the pattern; its mask). The substring test
#: skips a pattern cheaply on the many lines that cannot match it.
_SHAPES: Final[tuple[tuple[str, re.Pattern[str], str], ...]] = (
    # bot token; the id stays (it is public), the secret goes
    (":", re.compile(r"(?<![0-9])([0-9]{1,20}):[A-Za-z0-9_-]{20,}"), r"\1:***"),
    # owner API key
    ("bvo_", re.compile(r"\b(bvo_[0-9]{1,20}_)[A-Za-z0-9_-]+"), r"\1***"),
    # OpenAI-style API key
    ("sk-", re.compile(r"\b(sk-)[A-Za-z0-9_-]{16,}"), r"\1***"),
    # password in a URL: scheme://user:password@host
    ("://", re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s\"']*:)[^@\s\"']+@"), r"\1***@"),
    # an Authorization header or a bearer credential, in any spelling a log shows it
    (
        "authorization",
        re.compile(
            r"(?i)(authorization[\s\"']*[:=][\s\"']*(?:bearer|basic|token)?\s*)[^\s\"',\\]+"
        ),
        r"\1***",
    ),
    ("bearer", re.compile(r"(?i)(bearer\s+)[^\s\"',\\]+"), r"\1***"),
)

_lock: Final = threading.Lock()
_values: set[str] = set()
#: one alternation of every remembered spelling, longest first; None when there are none
_pattern: re.Pattern[str] | None = None


def _spellings(value: str) -> set[str]:
    """The ways a log line may show `value`: as is, JSON-escaped, repr-escaped."""
    out = {value, orjson.dumps(value).decode()[1:-1], repr(value)[1:-1]}
    try:
        out.add(repr(value.encode())[2:-1])
    except UnicodeEncodeError:
        pass
    return {s for s in out if len(s) >= MIN_SECRET_LEN}


def remember(values: Iterable[str | None]) -> None:
    """Mask these values (and their escaped spellings) in every later line."""
    global _pattern
    new = {v for v in values if v and len(v) >= MIN_SECRET_LEN}
    with _lock:
        if new <= _values:
            return
        _values.update(new)
        spellings = sorted({s for v in _values for s in _spellings(v)}, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in spellings))


def known_secrets() -> frozenset[str]:
    """Every value remembered so far (for tests that grep logs for leaks)."""
    with _lock:
        return frozenset(_values)


def forget_all() -> None:
    """For tests: drop every remembered value."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def redact(text: str) -> str:
    """`text` with every secret masked. Cheap when there is nothing to mask."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    lower = text.lower()
    for needle, shape, mask in _SHAPES:
        if needle in lower:
            text = shape.sub(mask, text)
    return text


def contains_secret(text: str) -> bool:
    """Whether `text` holds a secret of a known shape or a remembered value."""
    return redact(text) != text
