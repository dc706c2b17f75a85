"""Pure pieces: the reconcile plan, the shard map, backoff and restart intensity."""

from __future__ import annotations

import pytest

from bots.actor.policy import Backoff, BackoffConfig, RestartIntensity
from bots.actor.spec import BotSpec
from bots.telegram.token import BotToken
from supervisor.master.shards import shard_of, shards_of_worker
from supervisor.worker.plan import plan_changes


def spec(
    bot_id: int,
    revision: int = 1,
    handler: str = "echo",
    secret: str = "A" * 35,
    **settings: object,
) -> BotSpec:
    return BotSpec(bot_id, BotToken(f"{bot_id}:{secret}"), handler, settings, revision)


def test_plan_starts_new_stops_gone_and_keeps_unchanged() -> None:
    plan = plan_changes({1: spec(1), 2: spec(2)}, {2: spec(2), 3: spec(3)})
    assert [s.bot_id for s in plan.start] == [1]
    assert plan.stop == [3]
    assert not plan.restart and not plan.retune


def test_settings_only_change_retunes_in_place_but_token_or_handler_change_restarts() -> None:
    running = {1: spec(1), 2: spec(2), 3: spec(3)}
    desired = {
        1: spec(1, revision=2, rate=5),
        2: spec(2, revision=2, secret="B" * 35),
        3: spec(3, revision=2, handler="openai"),
    }
    plan = plan_changes(desired, running)
    assert [s.bot_id for s in plan.retune] == [1]
    assert sorted(s.bot_id for s in plan.restart) == [2, 3]
    assert not plan.start and not plan.stop


def test_empty_plan_is_falsy() -> None:
    assert not plan_changes({1: spec(1)}, {1: spec(1)})


def test_every_shard_belongs_to_exactly_one_worker() -> None:
    owned = [s for w in range(3) for s in shards_of_worker(w, 3, 64)]
    assert sorted(owned) == list(range(64))
    assert shard_of(7000000001, 64) == 7000000001 % 64
    with pytest.raises(ValueError):
        shards_of_worker(3, 3, 64)


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(BackoffConfig(min_delay=1, max_delay=8, factor=2, jitter=0))
    assert [b.next_delay() for _ in range(5)] == [1, 2, 4, 8, 8]
    b.reset()
    assert b.next_delay() == 1


def test_backoff_jitter_stays_within_bounds() -> None:
    b = Backoff(BackoffConfig(min_delay=10, max_delay=10, factor=1, jitter=0.1))
    assert b.next_delay(rand=0.0) == pytest.approx(9.0)
    assert b.next_delay(rand=1.0) == pytest.approx(11.0)


def test_bad_backoff_config_is_refused() -> None:
    with pytest.raises(ValueError):
        BackoffConfig(min_delay=5, max_delay=1)


def test_restart_intensity_allows_five_in_a_minute_then_refuses() -> None:
    ri = RestartIntensity(max_restarts=5, within_s=60)
    assert all(ri.record(t) for t in (0, 1, 2, 3, 4))
    assert not ri.record(5)
    # old restarts age out of the window
    ri2 = RestartIntensity(max_restarts=2, within_s=10)
    assert ri2.record(0) and ri2.record(5)
    assert ri2.record(11)
    assert not ri2.record(12)
