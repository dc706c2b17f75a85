"""The shape of one chat's context and the pure rules for changing it.

No I/O here: `apply_changes` is what every layer (memory, Redis replay, PostgreSQL
rebuild) agrees on, so a stale write retried on fresh state means the same thing
wherever it is retried.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

import orjson

Namespace = Literal["dialog", "messages", "prefs"]
NAMESPACES: Final[tuple[Namespace, ...]] = ("dialog", "messages", "prefs")

#: The role of the marker row a reset leaves in PostgreSQL; a rebuild starts after it.
RESET_ROLE: Final = "reset"

EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return EMPTY


def now_ts() -> float:
    """Wall-clock seconds rounded to microseconds, the precision PostgreSQL keeps."""
    return round(time.time(), 6)


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    ts: float = field(default_factory=now_ts)

    def as_json(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, "ts": self.ts}

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity across layers (PostgreSQL has no message id): role, text, microsecond."""
        return (self.role, self.content, round(self.ts * 1_000_000))


@dataclass(frozen=True, slots=True)
class Context:
    """One chat's context as one layer saw it. Never mutated: changes build a new one.

    `version` is opaque: "" means nothing is stored in Redis for this chat.
    """

    bot_id: int
    chat_id: int
    version: str = ""
    dialog: Mapping[str, Any] = field(default_factory=_empty)
    messages: tuple[Message, ...] = ()
    prefs: Mapping[str, Any] = field(default_factory=_empty)

    @property
    def empty(self) -> bool:
        return not (self.dialog or self.messages or self.prefs)

    def approx_bytes(self) -> int:
        """What the LRU charges for this entry: text sizes plus per-object overhead."""
        size = 240 + sum(len(m.content) + len(m.role) + 150 for m in self.messages)
        if self.dialog:
            size += len(orjson.dumps(dict(self.dialog))) + 64 * len(self.dialog)
        if self.prefs:
            size += len(orjson.dumps(dict(self.prefs))) + 64 * len(self.prefs)
        return size


@dataclass(frozen=True, slots=True)
class Changes:
    """One write. Applied in this order: reset, dialog_clear, dialog_set, prefs_set, append.

    `reset` empties dialog and messages (prefs stay) and leaves a marker in the durable
    history, so a rebuild from PostgreSQL never brings the old messages back.
    `dialog_clear` names dialog keys to remove; ("*",) removes them all.
    """

    append: tuple[Message, ...] = ()
    dialog_set: Mapping[str, Any] = field(default_factory=_empty)
    dialog_clear: tuple[str, ...] = ()
    prefs_set: Mapping[str, Any] = field(default_factory=_empty)
    reset: bool = False

    @property
    def touches(self) -> frozenset[Namespace]:
        out: set[Namespace] = set()
        if self.reset:
            out.update(("dialog", "messages"))
        if self.dialog_set or self.dialog_clear:
            out.add("dialog")
        if self.append:
            out.add("messages")
        if self.prefs_set:
            out.add("prefs")
        return frozenset(out)


def apply_changes(ctx: Context, changes: Changes, max_messages: int) -> Context:
    """The context after `changes` (version unchanged: the store assigns versions)."""
    dialog, messages, prefs = ctx.dialog, ctx.messages, ctx.prefs
    if changes.reset:
        dialog, messages = EMPTY, ()
    if changes.dialog_clear or changes.dialog_set:
        if "*" in changes.dialog_clear:
            new = dict(changes.dialog_set)
        else:
            new = {k: v for k, v in dialog.items() if k not in changes.dialog_clear}
            new.update(changes.dialog_set)
        dialog = MappingProxyType(new) if new else EMPTY
    if changes.prefs_set:
        prefs = MappingProxyType({**prefs, **changes.prefs_set})
    if changes.append:
        messages = (*messages, *changes.append)[-max_messages:]
    return Context(ctx.bot_id, ctx.chat_id, ctx.version, dialog, messages, prefs)


# -- wire format (Redis values are JSON; an empty namespace is no key at all) -----------------


def encode(ctx: Context, namespace: Namespace) -> bytes | None:
    """The namespace's Redis value, or None when it is empty (the key is deleted)."""
    if namespace == "messages":
        return orjson.dumps([m.as_json() for m in ctx.messages]) if ctx.messages else None
    value = ctx.dialog if namespace == "dialog" else ctx.prefs
    return orjson.dumps(dict(value)) if value else None


def _mapping(raw: bytes | str | None) -> Mapping[str, Any]:
    if not raw:
        return EMPTY
    data = orjson.loads(raw)
    return MappingProxyType(data) if isinstance(data, dict) and data else EMPTY


def _messages(raw: bytes | str | None) -> tuple[Message, ...]:
    if not raw:
        return ()
    data = orjson.loads(raw)
    if not isinstance(data, list):
        return ()
    return tuple(
        Message(str(m.get("role", "")), str(m.get("content", "")), float(m.get("ts", 0.0)))
        for m in data
        if isinstance(m, dict)
    )


def decode(
    bot_id: int,
    chat_id: int,
    version: str,
    dialog: bytes | str | None,
    messages: bytes | str | None,
    prefs: bytes | str | None,
) -> Context:
    """A context from Redis values. A malformed value reads as empty (never crashes a bot)."""
    try:
        d = _mapping(dialog)
    except orjson.JSONDecodeError:
        d = EMPTY
    try:
        m = _messages(messages)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        m = ()
    try:
        p = _mapping(prefs)
    except orjson.JSONDecodeError:
        p = EMPTY
    return Context(bot_id, chat_id, version, d, m, p)


def recent_history(
    rows_newest_first: Iterable[Message], extra: Iterable[Message], max_messages: int
) -> tuple[Message, ...]:
    """The messages a rebuild yields: durable rows plus not-yet-durable ones, each once,
    cut at the newest reset marker, the last `max_messages` of them, oldest first."""
    ordered = list(rows_newest_first)[::-1]
    seen = {m.key for m in ordered}
    for m in extra:
        if m.key not in seen:
            seen.add(m.key)
            ordered.append(m)
    for i in range(len(ordered) - 1, -1, -1):
        if ordered[i].role == RESET_ROLE:
            ordered = ordered[i + 1 :]
            break
    return tuple(ordered[-max_messages:])
