"""A worker's reconciler: registry rows -> running actors, by change rather than by scan.

Three kinds of pass (issue 8, part 5):

* **targeted** — a control hint naming bot ids: one query for those ids in our shards;
* **by change** — every `workers.reconcile_interval_s` and on a bare wake: rows and
  tombstones with `change_seq` above the cursor (migration 0003, indexed). The query
  looks back one pass (it reads from the cursor of the pass before), so a transaction
  that took its sequence value before our last read but committed after it is still
  seen; the rare safety pass covers anything slower;
* **full** — at start, after a shard assignment change and every
  `workers.reconcile_full_interval_s`: every active row of our shards, compared by
  revision and ciphertext without decrypting.

A token is decrypted only for a bot about to be started or restarted with a stored
token that differs from the one it runs with; decryption runs in batches of
`DECRYPT_BATCH` with a yield to the loop between them, so the loop never stalls.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from bots.actor.spec import BotSpec
from bots.handlers.plugins import HandlerLoadError, is_reference, load, preload, registered_names
from config.logthrottle import THROTTLE
from supervisor.exitcodes import ExitCode
from supervisor.failures import postgres_address
from supervisor.registry.changes import BotRow, ChangeFeed
from supervisor.registry.tokenbox import TokenDecryptError
from supervisor.worker.plan import Plan, plan_changes
from supervisor.worker.ticker import ticker

if TYPE_CHECKING:
    from bots.telegram.token import BotToken
    from config import Settings
    from supervisor.worker.fleet import Fleet

#: tokens decrypted between two yields to the event loop
DECRYPT_BATCH = 64
#: rows compared between two yields to the event loop
YIELD_EVERY = 1000
#: a reassignment waits this long at most for the stopped bots' records to reach Redis


class Decrypt(Protocol):
    def __call__(self, bot_id: int, blob: bytes, key_id: str) -> BotToken: ...


class OpenSecret(Protocol):
    def __call__(self, bot_id: int, blob: bytes, key_id: str) -> str: ...


class Host(Protocol):
    """What the reconciler reads and sets on its worker (supervisor/worker/worker.py)."""

    settings: Settings
    shards: list[int]
    #: shards to take over soon (rolling upgrade): their handlers are imported at boot
    warm: list[int]
    epoch: int
    state: str
    desired: int
    #: the process's exit status once it has drained
    exit_status: int
    fleet: Fleet
    _assigned_epoch: int
    _drain: asyncio.Event
    _reconcile_now: asyncio.Event
    _log: Any

    async def _write_heartbeat(self) -> None: ...


@dataclass(slots=True)
class ReconcileStats:
    """Cumulative, for tests, the bench and logs."""

    full: int = 0
    changed: int = 0
    targeted: int = 0
    rows_read: int = 0
    decrypted: int = 0


class Reconciler:
    def __init__(
        self,
        host: Host,
        feed: ChangeFeed,
        decrypt: Decrypt,
        open_secret: OpenSecret | None = None,
        know_owner: Callable[[int, int | None], None] | None = None,
    ) -> None:
        self.host = host
        #: told every row's owner (the usage meter: no owner query when a bot's first
        #: update comes; rows are re-read on every change and by the safety full pass)
        self.know_owner = know_owner
        self.feed = feed
        self.decrypt = decrypt
        self.open_secret = open_secret
        self.stats = ReconcileStats()
        self._shards: list[int] | None = None  # shards of the last full pass
        self._cursor = 0
        self._lookback = 0
        self._next_full = 0.0
        self._hinted: set[int] = set()
        self._blobs: dict[int, bytes] = {}  # ciphertext each running bot's token came from
        self._desired: set[int] = set()
        #: active rows whose token did not decrypt: retried every by-change pass (a reload
        #: may have brought the key back)
        self._undecryptable: set[int] = set()
        self._log = host._log

    def hint(self, bot_ids: Iterable[int]) -> None:
        """A control hint: reconcile these bots (all that changed, if none are named)."""
        self._hinted.update(bot_ids)
        self.host._reconcile_now.set()

    async def run(self) -> None:
        host = self.host
        async for _ in ticker(host.settings.workers.reconcile_interval_s, host._reconcile_now):
            if host._drain.is_set():
                return
            await self.pass_once()

    async def pass_once(self) -> None:
        """One pass of whichever kind is due; registry errors are logged, not raised."""
        host = self.host
        if host.state == "booting" and host.warm:
            await self._warm_up(host.warm)
            host.warm = []
            if host._drain.is_set():
                return  # broken handler code: never report ready
        shards, epoch = list(host.shards), host._assigned_epoch
        hinted, self._hinted = self._hinted, set()
        try:
            if shards != self._shards or time.monotonic() >= self._next_full:
                plan = await self._full(shards)
            elif hinted:
                plan = await self._targeted(hinted, shards)
            else:
                plan = await self._changed(shards)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            self._hinted |= hinted
            THROTTLE.warning(
                self._log,
                "reconcile.registry_unavailable",
                database=postgres_address(host.settings),
                error=type(exc).__name__,
            )
            return
        if host.shards != shards:
            host._reconcile_now.set()  # reassigned while we read: read again for the new shards
            return
        host.desired = len(self._desired)
        if plan:
            self._log.info(
                "reconcile.apply",
                start=len(plan.start),
                stop=len(plan.stop),
                restart=len(plan.restart),
                retune=len(plan.retune),
            )
            for bot_id in plan.stop:
                self._blobs.pop(bot_id, None)
            await host.fleet.apply(plan)
        if host.state == "booting":
            host.state = "ready"
            self._log.info("worker.ready", bots=len(host.fleet.handles))
            gc.collect()
            gc.freeze()  # the fleet's long-lived objects leave the collector's scans
        if epoch != host.epoch:
            # the master waits for this before giving moved shards to another worker, whose
            # bots start from the progress in Redis: what ours answered must be there first
            # (a stop's own save gives up after 5 s; a loaded Redis may need longer)
            stopped = len(plan.stop) if plan else 0
            within = host.settings.shutdown.grace_s
            if stopped and not await host.fleet.wait_progress_saved(within):
                self._log.warning("reconcile.progress_not_saved", bots=stopped, waited_s=within)
            host.epoch = epoch
            await host._write_heartbeat()

    async def _warm_up(self, shards: list[int]) -> None:
        """A replacement in a rolling upgrade imports the handlers of the shards it will
        take over before it reports ready: their bots then are not stopped while, say,
        aiogram imports (seconds). Best effort: what fails here is imported at start."""
        try:
            rows = await self.feed.active(shards, self.host.settings.workers.shards)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            return
        refs = {row.handler for row in rows}
        await asyncio.gather(*(preload(ref) for ref in refs))
        broken = {}
        for ref in refs:
            if is_reference(ref) or ref in registered_names():
                try:
                    load(ref)  # preloaded: no second import, a failure is cached
                except HandlerLoadError as exc:
                    broken[ref] = str(exc)
        if broken:
            # taking over would disable their bots: refuse, the old worker serves on
            self._log.error("worker.handlers_broken", handlers=broken)
            self.host.exit_status = ExitCode.HANDLERS_BROKEN
            self.host._drain.set()
            return
        self._log.info("worker.warmed", handlers=len(refs), bots=len(rows))

    # -- the three passes -----------------------------------------------------------------

    async def _full(self, shards: list[int]) -> Plan:
        total = self.host.settings.workers.shards
        cursor = await self.feed.cursor()  # read first: later changes come by change
        rows = await self.feed.active(shards, total)
        self.stats.full += 1
        running = self.host.fleet.running_specs()
        self._desired = set()
        plan = await self._plan(rows, running, running.keys())
        self._shards = shards
        self._cursor = self._lookback = cursor
        self._next_full = time.monotonic() + self.host.settings.workers.reconcile_full_interval_s
        return plan

    async def _changed(self, shards: list[int]) -> Plan:
        total = self.host.settings.workers.shards
        changes = await self.feed.since(self._lookback, shards, total)
        self.stats.changed += 1
        self._lookback, self._cursor = self._cursor, changes.cursor
        rows = changes.rows
        retry = self._undecryptable - {r.id for r in rows}
        if retry:
            rows = rows + await self.feed.by_ids(sorted(retry), shards, total)
        if not rows and not changes.removed:
            return Plan()
        also = [*changes.removed, *retry]
        return await self._plan(rows, self.host.fleet.running_specs(), also)

    async def _targeted(self, ids: set[int], shards: list[int]) -> Plan:
        rows = await self.feed.by_ids(sorted(ids), shards, self.host.settings.workers.shards)
        self.stats.targeted += 1
        return await self._plan(rows, self.host.fleet.running_specs(), ids)

    # -- compare, decrypt what is needed, plan ----------------------------------------------

    def _mode(self, row: BotRow) -> tuple[str, str]:
        """(mode, webhook secret) of a row. Raises TokenDecryptError."""
        if row.mode != "webhook":
            return "polling", ""
        if row.secret_blob is None or row.secret_key_id is None or self.open_secret is None:
            raise TokenDecryptError(f"bot {row.id}: webhook mode without a stored secret")
        return "webhook", self.open_secret(row.id, row.secret_blob, row.secret_key_id)

    async def _plan(
        self, rows: list[BotRow], running: Mapping[int, BotSpec], also: Iterable[int]
    ) -> Plan:
        """Plan for `rows` plus the bots in `also` (running ones absent from rows stop)."""
        self.stats.rows_read += len(rows)
        desired: dict[int, BotSpec] = {}
        needed: list[BotRow] = []
        failed: set[int] = set()
        for i, row in enumerate(rows):
            if i and not i % YIELD_EVERY:
                await asyncio.sleep(0)
            current = running.get(row.id)
            if not row.active:
                continue
            if self.know_owner is not None:
                self.know_owner(row.id, row.owner_id)
            if current is not None and current.revision == row.revision:
                desired[row.id] = current
            elif current is not None and self._blobs.get(row.id) == row.blob:
                try:
                    desired[row.id] = BotSpec(
                        row.id,
                        current.token,
                        row.handler,
                        row.settings,
                        row.revision,
                        row.username,
                        *self._mode(row),
                    )
                except TokenDecryptError:
                    self._log.error("reconcile.secret_undecryptable", bot_id=row.id)
                    failed.add(row.id)
            else:
                needed.append(row)
        for start in range(0, len(needed), DECRYPT_BATCH):
            if start:
                await asyncio.sleep(0)  # let polls and heartbeats run between batches
            for row in needed[start : start + DECRYPT_BATCH]:
                try:
                    token = self.decrypt(row.id, row.blob, row.key_id)
                    mode = self._mode(row)
                except TokenDecryptError:
                    self._log.error("reconcile.token_undecryptable", bot_id=row.id)
                    self._undecryptable.add(row.id)
                    failed.add(row.id)
                    continue
                self.stats.decrypted += 1
                self._blobs[row.id] = row.blob
                desired[row.id] = BotSpec(
                    row.id, token, row.handler, row.settings, row.revision, row.username, *mode
                )
        scope = {r.id for r in rows}
        scope.update(also)
        for bot_id in scope:
            if bot_id in desired:
                self._desired.add(bot_id)
                self._undecryptable.discard(bot_id)
            else:
                self._desired.discard(bot_id)
                if bot_id not in failed:
                    self._undecryptable.discard(bot_id)
        in_scope = {b: s for b, s in running.items() if b in scope}
        return plan_changes(desired, in_scope)
