"""The dashboard's pure parts: sessions and their expiry, live figures folded from
heartbeats, the workers' bounded per-bot figures, heartbeat compatibility, form errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bots.actor.state import ActorState
from ipc.heartbeat import Heartbeat
from supervisor.http.dashboard import forms
from supervisor.http.dashboard.live import LiveFigures
from supervisor.http.dashboard.sessions import SessionStore
from supervisor.registry.bot_service_errors import BotServiceError, ErrorKind
from supervisor.registry.owners import ADMIN, Caller
from supervisor.worker.bot_figures import BotFigures


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_after_its_ttl_and_ends_at_logout() -> None:
    clock = Clock()
    store = SessionStore(ttl_s=60, max_sessions=10, clock=clock)
    sid, session = store.create(Caller(owner_id=7, admin=False), "alice")
    assert store.get(sid) == session and session.caller.scope == 7
    assert store.get(sid + "x") is None and store.get("") is None and store.get(None) is None
    clock.now += 59.9
    assert store.get(sid) is not None
    clock.now += 0.1
    assert store.get(sid) is None and len(store) == 0
    sid2, _ = store.create(ADMIN, "admin")
    store.end(sid2)
    assert store.get(sid2) is None


def test_sessions_are_bounded_oldest_first_and_the_store_keeps_no_cookie_value() -> None:
    store = SessionStore(ttl_s=60, max_sessions=2, clock=Clock())
    ids = [store.create(ADMIN, "admin")[0] for _ in range(3)]
    assert store.get(ids[0]) is None and store.get(ids[1]) and store.get(ids[2])
    assert not any(i in repr(store._sessions) for i in ids)  # digests only
    assert len({store.get(i).csrf for i in ids[1:]}) == 2  # type: ignore[union-attr]


def _beat(per_bot: dict[str, list[Any]], omitted: int = 0) -> Heartbeat:
    return Heartbeat(index=0, per_bot=per_bot, per_bot_omitted=omitted)


def test_live_figures_count_per_minute_keep_an_hour_and_forget_unreported_bots() -> None:
    wall, mono = Clock(600_000.0), Clock()  # wall: the start of a minute
    live = LiveFigures(stale_after_s=10, wall=wall, clock=mono)
    live.on_beat(
        0, _beat({"5": ["running", 3, 2, 1, 0, wall.now], "6": ["starting", 0, 0, 0, 0, 0]})
    )
    wall.now += 1
    live.on_beat(
        0, _beat({"5": ["running", 4, 4, 0, 2, wall.now], "6": ["running", 0, 0, 0, 0, 0]})
    )
    five = live.bot(5, series=True)
    assert five["live_state"] == "running" and five["in_per_min"] == 7 and five["out_per_min"] == 6
    assert five["telegram_429"] == 1 and five["errors"] == 2 and five["last_update_at"] == wall.now
    assert (
        five["in_series"][-1] == 7 and sum(five["in_series"]) == 7 and len(five["in_series"]) == 60
    )
    assert live.bot(6)["in_per_min"] == 0.0 and live.bot(6)["live_state"] == "running"
    wall.now += 30 * 60  # half an hour later: the old minute is still in the chart
    live.on_beat(0, _beat({"5": ["running", 1, 0, 0, 0, wall.now]}))
    series = live.bot(5, series=True)["in_series"]
    assert series[-1] == 1 and series[-31] == 7 and sum(series) == 8
    assert live.bot(6) == {"id": 6, "live_state": None}  # no longer reported, no traffic
    wall.now += 61 * 60  # more than an hour: the chart rolled over
    live.on_beat(0, _beat({"5": ["running", 0, 0, 0, 0, 0]}))
    assert sum(live.bot(5, series=True)["in_series"]) == 0
    mono.now += 11
    assert live.bot(5)["live_state"] == "no heartbeat"
    assert live.fleet()["in_series"][-1] == 0 and len(live) == 1


def test_a_bot_that_stops_keeps_its_last_hour_then_is_forgotten() -> None:
    wall = Clock(600_000.0)
    live = LiveFigures(stale_after_s=10, wall=wall, clock=Clock())
    live.on_beat(0, _beat({"5": ["running", 2, 2, 0, 0, wall.now]}))
    live.on_beat(0, _beat({}))  # paused: no longer reported
    five = live.bot(5, series=True)
    assert five["live_state"] == "stopped" and sum(five["in_series"]) == 2
    assert five["last_update_at"] == wall.now
    wall.now += 59 * 60
    live.on_beat(0, _beat({}))
    assert live.bot(5)["live_state"] == "stopped"
    wall.now += 60
    live.on_beat(0, _beat({}))
    assert live.bot(5) == {"id": 5, "live_state": None} and len(live) == 0


def test_idle_running_bots_are_reported_by_id_and_keep_their_figures() -> None:
    wall = Clock(600_000.0)
    live = LiveFigures(stale_after_s=10, wall=wall, clock=Clock())
    live.on_beat(0, _beat({"5": ["running", 2, 1, 0, 0, wall.now]}))
    live.on_beat(0, Heartbeat(index=0, per_bot_idle=[5, 6, "x"]))  # type: ignore[list-item]
    five = live.bot(5)
    assert five["live_state"] == "running" and five["in_per_min"] == 2
    assert five["last_update_at"] == wall.now
    assert live.bot(6)["live_state"] == "running" and len(live) == 2
    live.on_beat(0, Heartbeat(index=0, per_bot_idle=[6]))
    assert live.bot(5)["live_state"] == "stopped" and live.bot(6)["live_state"] == "running"


def test_a_bot_moving_to_another_worker_is_not_forgotten_by_the_first() -> None:
    live = LiveFigures(stale_after_s=10, wall=Clock(), clock=Clock())
    live.on_beat(0, _beat({"5": ["running", 0, 0, 0, 0, 0]}))
    live.on_beat(1, _beat({"5": ["running", 1, 0, 0, 0, 0]}))
    live.on_beat(0, _beat({}))
    assert live.bot(5)["worker"] == 1
    live.on_beat(0, _beat({"bad": ["x"], "7": ["running"]}))  # malformed entries: skipped
    assert live.bot(7)["live_state"] is None


def test_beats_without_figures_keep_the_last_ones_and_the_bots_fresh() -> None:
    wall, mono = Clock(600_000.0), Clock()
    live = LiveFigures(stale_after_s=10, wall=wall, clock=mono)
    live.on_beat(0, _beat({"5": ["running", 3, 2, 0, 0, wall.now]}, omitted=4))
    for _ in range(15):  # 15 s of beats without figures: nothing forgotten, nothing stale
        mono.now += 1
        live.on_beat(0, Heartbeat(index=0, per_bot_included=False))
    five = live.bot(5, series=True)
    assert five["live_state"] == "running" and sum(five["in_series"]) == 3
    assert live.fleet()["bots_omitted"] == 4 and len(live) == 1
    mono.now += 11  # the worker stopped beating
    assert live.bot(5)["live_state"] == "no heartbeat"
    live.on_beat(0, _beat({}))  # figures again: 5 is gone from this worker
    assert live.bot(5)["live_state"] == "stopped"


def test_figures_are_due_every_poll_interval_with_half_a_beat_of_slack() -> None:
    figures = BotFigures()
    beats = [0.0, 1.0, 2.0, 3.0, 4.0, 4.6, 5.6, 6.6, 7.6, 8.6, 9.7, 10.6]
    assert [t for t in beats if figures.due(5.0, 0.5, now=t)] == [0.0, 4.6, 9.7]
    figures.record(5, 1, 1, 0, 0)  # deltas add up between snapshots
    figures.record(5, 2, 0, 0, 0)
    busy, _, _ = figures.snapshot({5: _Handle()}, limit=10)  # type: ignore[dict-item]
    assert busy["5"][1:3] == [3, 1]


def test_a_worker_sends_figures_sparsely_only_to_a_master_that_keeps_them() -> None:
    from types import SimpleNamespace

    from config import Settings
    from supervisor.worker.worker import Worker

    def worker(sparse: bool, **dashboard: Any) -> Worker:
        w = Worker(Settings(dashboard=dashboard), 0, [], 0, sparse_figures=sparse)
        w.fleet = SimpleNamespace(figures=BotFigures())  # type: ignore[assignment]
        return w

    sparse, every_beat, off = worker(True), worker(False), worker(False, enabled=False)
    assert [sparse._figures_due() for _ in range(3)] == [True, False, False]
    assert [every_beat._figures_due() for _ in range(3)] == [True, True, True]
    assert not off._figures_due()


class _Handle:
    def __init__(self, state: ActorState = ActorState.RUNNING) -> None:
        self.state = state


def test_per_bot_figures_are_capped_busiest_first_and_reset_each_beat() -> None:
    figures = BotFigures()
    handles: dict[int, Any] = {i: _Handle() for i in range(1, 21)}
    handles[3] = _Handle(ActorState.BACKOFF)
    figures.record(17, 2, 1, 0, 0)
    figures.record(17, 1, 0, 1, 1)
    busy, idle, omitted = figures.snapshot(handles, limit=5)
    assert omitted == 15 and len(busy) + len(idle) == 5
    assert busy["17"][:5] == ["running", 3, 1, 1, 1] and busy["17"][5] > 0
    busy, idle, omitted = figures.snapshot(handles, limit=100)
    # 17 has nothing new now: an id among the idle; 3 is not running: an entry
    assert omitted == 0 and set(busy) == {"3"} and 17 in idle and len(idle) == 19
    assert busy["3"][:5] == ["backoff", 0, 0, 0, 0]
    del handles[17]
    figures.snapshot(handles, limit=100)
    assert 17 not in figures._last_update


def test_heartbeats_with_and_without_per_bot_figures_read_both_ways() -> None:
    old = orjson.dumps({"index": 2, "pid": 9, "state": "ready", "future_field": 1})
    hb = Heartbeat.loads(old)
    assert hb is not None and hb.per_bot == {} and hb.index == 2
    new = Heartbeat(
        index=1,
        per_bot={"5": ["running", 1, 2, 3, 4, 5.0]},
        per_bot_idle=[6, 7],
        per_bot_omitted=3,
    )
    back = Heartbeat.loads(new.dumps())
    assert back == new
    summary = new.summary()
    assert not {"per_bot", "per_bot_idle", "per_bot_omitted", "per_bot_included"} & set(summary)
    assert summary["index"] == 1
    assert hb.per_bot_included  # an older worker's beat: figures included
    bare = Heartbeat.loads(Heartbeat(index=1, per_bot_included=False).dumps())
    assert bare is not None and not bare.per_bot_included


@pytest.mark.parametrize(
    ("code", "message", "field"),
    [
        ("token_rejected", "token: Telegram rejected", "token"),
        ("unknown_handler", "handler: no such", "handler"),
        ("forbidden", "owner: only the admin key", "owner"),
        ("forbidden", "handler: 'x:y' is an import path", "handler"),
        ("invalid_settings", "settings of a openai bot: system_prompt: too short", "system_prompt"),
        ("invalid_settings", "settings.ratelimit: bad", "settings"),
        ("telegram_unavailable", "could not check", ""),
    ],
)
def test_service_errors_land_next_to_their_field(code: str, message: str, field: str) -> None:
    exc = BotServiceError(ErrorKind.INVALID, code, message)
    assert forms.errors_of(exc) == {field: message}


def test_settings_forms_parse_json_and_lay_own_fields_over_it() -> None:
    assert forms.parse_settings("") == {}
    assert forms.parse_settings('{"a": 1}', {"system_prompt": "Be brief."}) == {
        "a": 1,
        "system_prompt": "Be brief.",
    }
    assert forms.parse_settings('{"system_prompt": "x"}', {"system_prompt": " "}) == {}
    for bad, what in (("[1]", "JSON object"), ("{", "not valid JSON"), ("[" * 5000, "JSON")):
        with pytest.raises(forms.FormError) as err:
            forms.parse_settings(bad)
        assert err.value.field == "settings" and what in err.value.message
