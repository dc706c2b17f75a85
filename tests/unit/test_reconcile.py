"""The reconciler reads by change, by hint or in full, and decrypts only what it starts."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from config import Settings, load_settings
from supervisor.exitcodes import ExitCode
from supervisor.registry.tokenbox import TokenDecryptError
from supervisor.worker.reconcile import DECRYPT_BATCH, Reconciler
from tests.reconcile_helpers import CountingDecrypt, FakeFeed, FakeHost

SHARDS = 4


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    config = tmp_path / "empty.toml"
    config.write_text("")
    return load_settings(config, environ={}, overrides={"workers": {"shards": SHARDS}})


def make(settings: Settings, bots: int = 8, shards: list[int] | None = None) -> Any:
    feed = FakeFeed(SHARDS)
    for bot_id in range(1, bots + 1):
        feed.put(bot_id)
    host = FakeHost(settings, shards if shards is not None else list(range(SHARDS)))
    decrypt = CountingDecrypt()
    rec = Reconciler(host, feed, decrypt)  # type: ignore[arg-type]
    return feed, host, decrypt, rec


async def test_first_pass_is_full_and_later_passes_read_only_changes(settings: Settings) -> None:
    feed, host, decrypt, rec = make(settings)
    await rec.pass_once()
    assert feed.calls == ["cursor", "active"]
    assert sorted(host.fleet.specs) == list(range(1, 9))
    assert sorted(decrypt.ids) == list(range(1, 9))
    assert host.state == "ready" and host.desired == 8
    feed.calls.clear()
    decrypt.ids.clear()
    await rec.pass_once()
    await rec.pass_once()
    assert feed.calls == ["since", "since"]  # no full scan
    assert decrypt.ids == []  # running, unchanged bots are never decrypted again
    assert len(host.fleet.plans) == 1


async def test_a_settings_change_retunes_without_decrypting(settings: Settings) -> None:
    feed, host, decrypt, rec = make(settings)
    await rec.pass_once()
    decrypt.ids.clear()
    feed.put(3, revision=2, settings={"ratelimit": {"per_bot": {"limit": 5}}})
    await rec.pass_once()
    plan = host.fleet.plans[-1]
    assert [s.bot_id for s in plan.retune] == [3] and not plan.restart and not plan.start
    assert decrypt.ids == []
    assert host.fleet.specs[3].revision == 2


async def test_a_new_token_restarts_and_only_that_token_is_decrypted(settings: Settings) -> None:
    feed, host, decrypt, rec = make(settings)
    await rec.pass_once()
    decrypt.ids.clear()
    feed.put(5, revision=2, blob=b"fresh-token")
    feed.put(9)  # a new bot
    await rec.pass_once()
    plan = host.fleet.plans[-1]
    assert [s.bot_id for s in plan.restart] == [5]
    assert [s.bot_id for s in plan.start] == [9]
    assert sorted(decrypt.ids) == [5, 9]
    assert rec.stats.rows_read == 8 + 2


async def test_paused_and_deleted_bots_stop(settings: Settings) -> None:
    feed, host, _, rec = make(settings)
    await rec.pass_once()
    feed.put(2, active=False, revision=2)
    feed.delete(7)
    await rec.pass_once()
    assert sorted(host.fleet.plans[-1].stop) == [2, 7]
    assert sorted(host.fleet.specs) == [1, 3, 4, 5, 6, 8]
    assert host.desired == 6


async def test_the_pass_looks_back_one_cursor_for_late_commits(settings: Settings) -> None:
    """A change whose sequence value is below the cursor (its transaction committed late)
    is still seen by the next pass."""
    feed, host, _, rec = make(settings)
    await rec.pass_once()
    feed.put(1, revision=2, settings={"late": True})
    late = feed.rows[1]
    feed.put(2, revision=2, settings={"x": 1})
    feed.rows.pop(1)  # not yet committed when the first pass reads
    await rec.pass_once()
    feed.rows[1] = late  # commits now, with a value below the cursor just read
    await rec.pass_once()
    assert host.fleet.specs[1].settings == {"late": True}


async def test_a_hint_reconciles_just_its_bots(settings: Settings) -> None:
    feed, host, decrypt, rec = make(settings)
    await rec.pass_once()
    feed.calls.clear()
    decrypt.ids.clear()
    feed.put(4, revision=2, blob=b"new-token")
    feed.put(6, active=False, revision=2)
    rec.hint([4, 6])
    assert host._reconcile_now.is_set()
    await rec.pass_once()
    assert feed.calls == ["by_ids:[4, 6]"]
    plan = host.fleet.plans[-1]
    assert [s.bot_id for s in plan.restart] == [4] and plan.stop == [6]
    assert decrypt.ids == [4]


async def test_a_hinted_bot_that_is_gone_stops(settings: Settings) -> None:
    feed, host, _, rec = make(settings)
    await rec.pass_once()
    feed.delete(3)
    rec.hint([3, 1000])  # 1000: never ours, never running: ignored
    await rec.pass_once()
    assert host.fleet.plans[-1].stop == [3] and not host.fleet.plans[-1].start


async def test_shard_change_and_safety_pass_are_full_and_decrypt_no_running_bot(
    settings: Settings,
) -> None:
    feed, host, decrypt, rec = make(settings, shards=[0, 1])
    await rec.pass_once()
    assert sorted(host.fleet.specs) == [1, 4, 5, 8]
    decrypt.ids.clear()
    feed.calls.clear()
    host.shards = [1, 2]
    await rec.pass_once()
    assert feed.calls == ["cursor", "active"]
    assert sorted(host.fleet.specs) == [1, 2, 5, 6]
    assert sorted(decrypt.ids) == [2, 6]  # only the bots it starts
    decrypt.ids.clear()
    feed.calls.clear()
    rec._next_full = 0.0  # the safety pass is due
    await rec.pass_once()
    assert feed.calls == ["cursor", "active"] and decrypt.ids == []


async def test_decryption_yields_to_the_loop_between_batches(settings: Settings) -> None:
    feed, host, _, rec = make(settings, bots=DECRYPT_BATCH * 4)
    ticks = 0
    seen: list[int] = []

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def decrypt(bot_id: int, blob: bytes, key_id: str) -> Any:
        seen.append(ticks)
        return CountingDecrypt()(bot_id, blob, key_id)

    rec.decrypt = decrypt
    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    try:
        await rec.pass_once()
    finally:
        task.cancel()
    assert len(seen) == DECRYPT_BATCH * 4
    # the other task ran between batches, never inside one
    assert len(set(seen)) >= 4
    assert all(
        len(set(seen[i : i + DECRYPT_BATCH])) == 1 for i in range(0, len(seen), DECRYPT_BATCH)
    )


async def test_an_undecryptable_token_is_retried_until_it_decrypts(settings: Settings) -> None:
    feed, host, decrypt, rec = make(settings, bots=3)
    broken = {2}

    def flaky(bot_id: int, blob: bytes, key_id: str) -> Any:
        if bot_id in broken:
            raise TokenDecryptError("no key")
        return decrypt(bot_id, blob, key_id)

    rec.decrypt = flaky
    await rec.pass_once()
    assert sorted(host.fleet.specs) == [1, 3] and host.desired == 2
    feed.calls.clear()
    await rec.pass_once()  # nothing changed, but the failed row is read again
    assert feed.calls == ["since", "by_ids:[2]"]
    broken.clear()  # the key came back (reload)
    await rec.pass_once()
    assert sorted(host.fleet.specs) == [1, 2, 3] and host.desired == 3
    feed.calls.clear()
    await rec.pass_once()
    assert feed.calls == ["since"]


async def test_a_rolling_upgrades_replacement_imports_its_future_handlers_before_ready(
    settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "warm_plugin_x.py").write_text("def factory(deps):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    feed, host, _, rec = make(settings, bots=0, shards=[])
    feed.put(4, handler="warm_plugin_x:factory")  # shard 0 of 4
    host.warm = [0]
    assert "warm_plugin_x" not in sys.modules
    await rec.pass_once()
    assert "warm_plugin_x" in sys.modules  # imported while it owns nothing yet
    assert host.state == "ready" and host.fleet.specs == {} and host.warm == []


async def test_a_replacement_whose_future_handlers_do_not_import_exits_before_ready(
    settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "warm_plugin_broken.py").write_text("def factory(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    feed, host, _, rec = make(settings, bots=0, shards=[])
    feed.put(4, handler="warm_plugin_broken:factory")
    feed.put(8, handler="echo")
    host.warm = [0]
    await rec.pass_once()
    assert host.exit_status == ExitCode.HANDLERS_BROKEN and host._drain.is_set()
    assert host.state == "booting" and host.heartbeats == 0  # the master never sees it ready
