"""Master <-> worker wire formats tolerate version skew: unknown fields ignored, missing
ones defaulted, unknown message types refused cleanly."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest

from ipc import pipe
from ipc.heartbeat import Heartbeat, HeartbeatSender, read_heartbeats
from ipc.messages import BadMessage


def test_a_heartbeat_from_a_newer_or_older_worker_is_understood() -> None:
    newer = orjson.dumps({"index": 1, "pid": 42, "state": "ready", "at": 1.0, "brand_new": [1]})
    hb = Heartbeat.loads(newer)
    assert hb is not None and (hb.index, hb.pid, hb.state) == (1, 42, "ready")
    assert hb.bots == {} and hb.epoch == -1  # missing fields get their defaults
    assert Heartbeat.loads(b"[1, 2]") is None and Heartbeat.loads(b"{not json") is None
    assert Heartbeat.loads(Heartbeat(index=3, pid=7).dumps()) == Heartbeat(index=3, pid=7)


def test_pipe_messages_round_trip_and_ignore_unknown_fields() -> None:
    msg = pipe.Assign(shards=(1, 3), epoch=4)
    assert pipe.decode(pipe.encode(msg)) == msg
    boot = pipe.decode(b'{"type":"settings","settings":{"a":1},"shards":[0],"epoch":2,"x":9}')
    assert boot == pipe.Configure(settings={"a": 1}, shards=(0,), epoch=2)
    # an older master: it forgets bots a beat leaves out, so it gets figures every beat
    assert isinstance(boot, pipe.Configure) and not boot.sparse_figures
    reload_ = pipe.decode(b'{"type":"settings","settings":{}}')
    assert isinstance(reload_, pipe.Configure) and reload_.shards is None
    with pytest.raises(BadMessage):
        pipe.decode(b'{"type":"teleport"}')
    with pytest.raises(BadMessage):
        pipe.decode(b'{"type":"assign","shards":"all"}')


async def test_heartbeats_cross_a_pipe_line_by_line() -> None:
    r, w = os.pipe()
    got: list[Heartbeat] = []
    reader = asyncio.create_task(read_heartbeats(r, got.append))
    sender = await HeartbeatSender.open(w)
    for i in range(3):
        assert sender.send(Heartbeat(index=0, pid=i, shards=list(range(64))))
    sender.close()  # EOF: the reader ends
    async with asyncio.timeout(5):
        await reader
    assert [hb.pid for hb in got] == [0, 1, 2]
