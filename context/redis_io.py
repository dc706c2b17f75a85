"""Context in Redis: one MGET to read a chat, one Lua compare-and-set to write it.

Keys (from ipc/keys.py only): `ctx:{bot}:{chat}:{dialog|messages|prefs}` with their
own TTLs, plus `ctx:{bot}:{chat}:ver`, a random token replaced on every write and kept
as long as the longest namespace TTL. A random token, not a counter, so a chat wiped
by FLUSHALL and written again can never show a stale writer the version it expects.
The token starts with the write's time in microseconds (`version_stamp`): a load
compares it with PostgreSQL's `chat_state.stamp` and rebuilds when Redis is older.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis

from context.model import NAMESPACES, Context, Namespace, decode, encode
from ipc import keys

#: KEYS: ver, dialog, messages, prefs.
#: ARGV: expected version ("" = absent), new version, version ttl ms,
#:       then per namespace: mode ("set" | "del" | "keep"), value, ttl ms.
#: Returns {1} when written; else {0, version, dialog, messages, prefs} as they are now,
#: so the caller retries on fresh state without another round trip.
_CAS: Final = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then
  return {0, cur or '', redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or '',
          redis.call('GET', KEYS[4]) or ''}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
for i = 0, 2 do
  local mode, value, ttl = ARGV[4 + 3 * i], ARGV[5 + 3 * i], ARGV[6 + 3 * i]
  local key = KEYS[2 + i]
  if mode == 'set' then
    redis.call('SET', key, value, 'PX', ttl)
  elseif mode == 'del' then
    redis.call('DEL', key)
  else
    redis.call('PEXPIRE', key, ttl)
  end
end
return {1}
"""

#: Errors that mean "Redis is not answering" (as opposed to a bug in our data).
REDIS_DOWN: Final = (aioredis.RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Ttls:
    dialog_ms: int
    messages_ms: int
    prefs_ms: int

    def of(self, namespace: Namespace) -> int:
        return {"dialog": self.dialog_ms, "messages": self.messages_ms, "prefs": self.prefs_ms}[
            namespace
        ]

    @property
    def longest_ms(self) -> int:
        return max(self.dialog_ms, self.messages_ms, self.prefs_ms)


def new_version() -> str:
    """`{microseconds since the epoch}-{random}`: unique, and says when it was written."""
    return f"{round(time.time() * 1_000_000)}-{secrets.token_hex(6)}"


def version_stamp(version: str) -> float:
    """When a version was written, in epoch seconds (0.0: unknown, e.g. an older format)."""
    head, sep, _ = version.partition("-")
    if not sep or not head.isdigit():
        return 0.0
    return int(head) / 1_000_000


class RedisContexts:
    """Reads and conditional writes of chat contexts. Runs in the worker's event loop."""

    def __init__(self, client: aioredis.Redis, prefix: str, ttls: Ttls) -> None:
        self._client = client
        self._prefix = prefix
        self._ttls = ttls
        self._cas = client.register_script(_CAS)

    def _keys(self, bot_id: int, chat_id: int) -> list[str]:
        p = self._prefix
        return [
            keys.context_version_key(p, bot_id, chat_id),
            *(keys.context_key(p, bot_id, chat_id, ns) for ns in NAMESPACES),
        ]

    async def fetch(self, bot_id: int, chat_id: int) -> Context:
        """The chat as stored; `version == ""` means nothing is stored (new, expired or lost)."""
        ver, dialog, messages, prefs = await self._client.mget(self._keys(bot_id, chat_id))
        return decode(bot_id, chat_id, _text(ver), dialog, messages, prefs)

    async def write(
        self, expected: str, new: Context, changed: frozenset[Namespace], version: str
    ) -> tuple[bool, Context]:
        """Write `new` as `version` if the stored version is still `expected`.

        Returns (True, new with its fresh version) or (False, the context as stored now).
        Namespaces not in `changed` only get their TTL refreshed. The caller picks
        `version` (see `new_version`), so after an error it can tell whether it landed.
        """
        argv: list[str | bytes | int] = [expected, version, self._ttls.longest_ms]
        for ns in NAMESPACES:
            ttl = self._ttls.of(ns)
            if ns not in changed:
                argv += ["keep", "", ttl]
                continue
            value = encode(new, ns)
            argv += ["del", "", ttl] if value is None else ["set", value, ttl]
        reply = await self._cas(keys=self._keys(new.bot_id, new.chat_id), args=argv)
        written = Context(new.bot_id, new.chat_id, version, new.dialog, new.messages, new.prefs)
        if reply[0] == 1:
            return True, written
        _, ver, dialog, messages, prefs = reply
        if _text(ver) == version:
            # our own write landed, its answer got lost and redis-py re-sent the script
            return True, written
        return False, decode(new.bot_id, new.chat_id, _text(ver), dialog, messages, prefs)

    async def ping(self) -> None:
        await self._client.ping()


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw
