"""Per-actor counters, shared by the actor and its chat dispatcher."""

from __future__ import annotations


class ActorStats:
    """Plain counters on the hot path; the worker takes and zeroes them every heartbeat."""

    __slots__ = (
        "dropped",
        "duplicates",
        "handled",
        "handler_errors",
        "latency",
        "poll_errors",
        "received",
    )

    def __init__(self) -> None:
        self.received = 0
        self.duplicates = 0
        self.handled = 0
        self.handler_errors = 0
        self.dropped = 0
        self.poll_errors = 0
        self.latency: list[float] = []
