"""Typed, versioned control messages: one discriminated union, parsed in one place."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

VERSION = 1


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    v: int = VERSION


class Reconcile(_Message):
    """Hint: the registry changed; re-read it now (bots: only these, or all if empty)."""

    type: Literal["reconcile"] = "reconcile"
    bots: tuple[int, ...] = ()


class Reload(_Message):
    """Reload configuration (SIGHUP, `botvisor reload` and the API build this one message)."""

    type: Literal["reload"] = "reload"


class Drain(_Message):
    """Stop intake, finish in-flight work, exit."""

    type: Literal["drain"] = "drain"


class Upgrade(_Message):
    """Replace the workers one at a time with fresh interpreters (SIGUSR2, `botvisor
    upgrade` and the API reach one handler). The master answers on `reply_to`, if given,
    with `{"accepted": bool, "upgrade": progress}` (RPUSH, like a status reply)."""

    type: Literal["upgrade"] = "upgrade"
    reply_to: str | None = None


class StatusRequest(_Message):
    """Every process answers with its live figures: RPUSH to `reply_to` (request/reply)."""

    type: Literal["status"] = "status"
    reply_to: str


Message = Reconcile | Reload | Drain | Upgrade | StatusRequest
ControlMessage = Annotated[Message, Field(discriminator="type")]
_ADAPTER: TypeAdapter[Message] = TypeAdapter(ControlMessage)


class BadMessage(ValueError):
    """A control message that does not parse; carries a short reason, never the payload."""


def encode(message: Message) -> bytes:
    return message.model_dump_json().encode()


def decode(raw: bytes | str) -> Message:
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise BadMessage(f"bad control message: {exc.error_count()} error(s)") from None
