"""CSRF tokens: every form of the dashboard carries one, every POST is checked.

Runs in the master's event loop. A logged-in form carries its session's token (one per
session, compared in constant time). The login form has no session yet, so it uses a
double-submit cookie: a random value in an HttpOnly SameSite=Strict cookie that the
form must repeat. A POST without a matching token is refused with 403 before its view
runs; the session cookies are SameSite=Strict as a second line.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

FIELD: Final = "_csrf"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def matches(expected: str | None, presented: object) -> bool:
    if not expected or not isinstance(presented, str) or len(presented) > 128:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
