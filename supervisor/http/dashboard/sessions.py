"""Dashboard sessions: who a browser speaks for, kept in the master's memory only.

Runs in the master's event loop. A login trades a key (an owner's API key or
security.admin_key) for a random session id in an HttpOnly, SameSite=Strict cookie; the
key itself is never stored, here or in the browser. A session ends at logout, after
`dashboard.session_ttl_s`, or when the master restarts (nothing is persisted, so a
restart logs everyone out). At most `dashboard.max_sessions` are kept, oldest dropped.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from supervisor.registry.owners import Caller

COOKIE: Final = "bv_session"
#: the login form's double-submit cookie (there is no session yet to bind its token to)
LOGIN_COOKIE: Final = "bv_login"


@dataclass(frozen=True, slots=True)
class Session:
    """One logged-in browser."""

    caller: Caller
    #: what the pages call the caller: the owner's name, or "admin"
    label: str
    #: the token every form of this session must carry (supervisor/http/dashboard/csrf.py)
    csrf: str
    expires_at: float


def _digest(session_id: str) -> str:
    # the store holds digests: a memory dump or a debug print shows no usable cookie
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(
        self, ttl_s: float, max_sessions: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._max = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, caller: Caller, label: str) -> tuple[str, Session]:
        """A new session; returns the id for the cookie (the store keeps only its digest)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(caller, label, secrets.token_urlsafe(32), self._clock() + self.ttl_s)
        self._sessions[_digest(session_id)] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value, or None (unknown, expired or logged out)."""
        if not session_id or len(session_id) > 128:
            return None
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if self._clock() >= session.expires_at:
            del self._sessions[key]
            return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    def sweep(self) -> int:
        """Forget expired sessions; returns how many (called on each login)."""
        now = self._clock()
        dead = [k for k, s in self._sessions.items() if now >= s.expires_at]
        for k in dead:
            del self._sessions[k]
        return len(dead)
