"""Failed logins per source with growing lockouts (supervisor/registry/lockout.py)."""

from __future__ import annotations

from supervisor.registry.lockout import Lockout


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_free_failures_then_lockouts_that_double_up_to_the_cap() -> None:
    clock = Clock()
    lock = Lockout(free=3, base_s=1.0, max_s=8.0, clock=clock)
    assert [lock.failed("ip")[1] for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lock.retry_after("ip") == 0.0
    waits = []
    for _ in range(6):
        waits.append(lock.failed("ip")[1])
        assert lock.retry_after("ip") == waits[-1]
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    clock.now += 7.5
    assert lock.retry_after("ip") == 0.5
    assert lock.retry_after("other") == 0.0  # per source


def test_a_quiet_source_is_forgotten_and_memory_is_bounded() -> None:
    clock = Clock()
    lock = Lockout(free=1, max_s=10.0, max_sources=100, clock=clock)
    lock.failed("ip")
    lock.failed("ip")
    clock.now += 41
    assert lock.retry_after("ip") == 0.0
    assert lock.failed("ip") == (1, 0.0)  # counted from scratch
    for n in range(1000):
        lock.failed(f"flood-{n}")
    assert len(lock._sources) == 100
