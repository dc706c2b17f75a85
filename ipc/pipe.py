"""Typed, versioned messages on the master -> worker stdin pipe (one JSON object a line).

Unknown fields are ignored and new fields get defaults, so a master and workers of
adjacent versions understand each other during a rolling upgrade; an unknown `type`
is reported as a `BadMessage` and skipped, never a crash.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ipc.messages import VERSION, BadMessage


class _PipeMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    v: int = VERSION


class Leases(_PipeMessage):
    """This host's shard leases (every renewal): the fencing epoch of each shard it holds
    and the lease-clock time (ipc/fencing.py: lease_clock) until which they are surely
    valid (None: no deadline, the host is alone); past it the worker's bots act on nothing."""

    type: Literal["leases"] = "leases"
    epochs: dict[int, int]
    valid_until: float | None = None


class Configure(_PipeMessage):
    """Settings: the first line a worker reads (with its first shards) and every reload
    (without: the assignment is unchanged)."""

    type: Literal["settings"] = "settings"
    settings: dict[str, Any]
    shards: tuple[int, ...] | None = None
    epoch: int | None = None
    #: with the first shards: their leases (a second line could be lost to the worker's
    #: buffered read of the first)
    leases: Leases | None = None
    #: shards the worker will be assigned soon (a rolling upgrade's replacement): it
    #: imports their handlers before it reports ready
    warm: tuple[int, ...] = ()
    #: this master folds heartbeats without per-bot figures (`Heartbeat.per_bot_included`
    #: False): the worker then sends them every `dashboard.poll_interval_s`, not every
    #: beat. An older master forgets the bots a beat leaves out, so its workers send them
    #: every beat. Read from the first line only (a worker lives under one master).
    sparse_figures: bool = False
    #: the worker's index, for a standby started before it had one (`--standby`)
    index: int | None = None


class Assign(_PipeMessage):
    """A new shard set (rebalance); the epoch comes back in the worker's heartbeat."""

    type: Literal["assign"] = "assign"
    shards: tuple[int, ...]
    epoch: int


PipeMessage = Configure | Assign | Leases
_ADAPTER: TypeAdapter[PipeMessage] = TypeAdapter(
    Annotated[PipeMessage, Field(discriminator="type")]
)


def encode(message: PipeMessage) -> bytes:
    return message.model_dump_json().encode() + b"\n"


def decode(line: bytes | str) -> PipeMessage:
    try:
        return _ADAPTER.validate_json(line)
    except ValidationError as exc:
        raise BadMessage(f"bad pipe message: {exc.error_count()} error(s)") from None
