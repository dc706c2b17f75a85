"""A bot actor's states and the transitions between them (`BotActor.set_state` checks them)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class ActorState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DISABLED = "disabled"


ALLOWED: Final[Mapping[ActorState, frozenset[ActorState]]] = {
    ActorState.STARTING: frozenset(
        {ActorState.RUNNING, ActorState.BACKOFF, ActorState.DISABLED, ActorState.STOPPING}
    ),
    ActorState.RUNNING: frozenset({ActorState.BACKOFF, ActorState.DISABLED, ActorState.STOPPING}),
    ActorState.BACKOFF: frozenset({ActorState.STARTING, ActorState.STOPPING}),
    ActorState.STOPPING: frozenset({ActorState.STOPPED}),
    ActorState.STOPPED: frozenset(),
    ActorState.DISABLED: frozenset({ActorState.STOPPING, ActorState.STOPPED}),
}


class IllegalTransition(RuntimeError):
    pass
