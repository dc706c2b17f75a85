"""The audit log: who did what to which target, when, from where, and how it ended.

Runs in any process that acts for an owner or the admin (master: admin API; worker: the
manager bot; CLI). `AuditLog.record(...)` is the one call every surface makes; it never
blocks and never raises. Two ways a row reaches PostgreSQL `audit_log` (migration 0008):

* **A registry change that succeeds** is written by the same SQL statement as the change
  (`audited()`: a data-modifying CTE), so nothing changes unrecorded and the audit adds
  no failure mode of its own (the change needed PostgreSQL anyway).
* **Everything else** (refusals, logins, key rotations, quota changes) goes through
  `record()`: queued in memory, written in batches by `run()`; a PostgreSQL fault delays
  the rows (retried with backoff, at most `MAX_PENDING` kept), never the action.

Rows hold an actor (`admin` or `owner:<id>`), never a key; `detail` holds names and
counts, never a token, a key or a setting's value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import asyncpg
import structlog

log = structlog.get_logger(__name__)

#: Rows kept in memory while PostgreSQL does not take them; older ones are dropped (counted).
MAX_PENDING: Final = 10_000
#: Rows per INSERT batch.
BATCH: Final = 500
_BACKOFF_MAX_S: Final = 30.0
_COLUMNS: Final = "actor, owner_id, action, target, source, outcome, detail"
#: What PostgreSQL trouble looks like: the writer retries, the action is not affected.
_FAULTS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class Caller(Protocol):
    """Who acts (supervisor/registry/owners.py: `Caller`; not imported: owners imports bots,
    which writes audit rows)."""

    @property
    def owner_id(self) -> int | None: ...

    @property
    def admin(self) -> bool: ...


def actor_of(caller: Caller) -> str:
    """How a caller is named in the log: never by its key."""
    return "admin" if caller.admin else f"owner:{caller.owner_id}"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row to write. `owner_id` is whose resource the action concerns."""

    actor: str
    action: str
    target: str
    source: str
    outcome: str = "ok"
    owner_id: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def row(self) -> tuple[Any, ...]:
        detail = json.dumps(dict(self.detail), default=str)
        return (
            self.actor,
            self.owner_id,
            self.action,
            self.target,
            self.source,
            self.outcome,
            detail,
        )


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One stored row, as `GET /v1/audit` and `botvisor audit` show it."""

    id: int
    at: datetime
    actor: str
    owner_id: int | None
    action: str
    target: str
    source: str
    outcome: str
    detail: Mapping[str, Any]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "owner_id": self.owner_id,
            "action": self.action,
            "target": self.target,
            "source": self.source,
            "outcome": self.outcome,
            "detail": dict(self.detail),
        }


def audited(statement: str, args: Sequence[Any], entry: AuditEntry | None) -> tuple[str, list[Any]]:
    """`statement` (INSERT/UPDATE/DELETE … RETURNING owner_id, …) extended to write `entry`
    in the same statement for each row it changed; the row's owner becomes the entry's.
    Without an entry, the statement as it is."""
    if entry is None:
        return statement, list(args)
    n = len(args)
    sql = (
        f"WITH changed AS ({statement}), logged AS (INSERT INTO audit_log ({_COLUMNS})"
        f" SELECT ${n + 1}, changed.owner_id, ${n + 2}, ${n + 3}, ${n + 4}, ${n + 5},"
        f" ${n + 6}::jsonb FROM changed) SELECT * FROM changed"
    )
    actor, _, action, target, source, outcome, detail = entry.row()
    return sql, [*args, actor, action, target, source, outcome, detail]


class AuditLog:
    """The audit log of one process: `record()` queues, `run()` writes."""

    def __init__(self, pool: asyncpg.Pool, timeout: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout
        self._pending: deque[AuditEntry] = deque()
        self._wake = asyncio.Event()
        self._failing = False
        #: one writer at a time (the task and a flush): a batch is written once
        self._writing = asyncio.Lock()
        self.dropped = 0

    def record(
        self,
        caller: Caller | str,
        action: str,
        target: str = "",
        *,
        source: str,
        outcome: str = "ok",
        owner_id: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one row. Never blocks, never raises: the action it records goes on."""
        if isinstance(caller, str):
            actor = caller
        else:
            actor = actor_of(caller)
            owner_id = caller.owner_id if owner_id is None else owner_id
        self.add(AuditEntry(actor, action, target, source, outcome, owner_id, detail or {}))

    def add(self, entry: AuditEntry) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(entry)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Runs as a task until cancelled: writes what is queued, retries after faults."""
        delay = 1.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write_pending()
            except _FAULTS as exc:
                if not self._failing:
                    log.warning(
                        "audit.write_failed", error=type(exc).__name__, pending=self.pending
                    )
                self._failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                self._wake.set()
                continue
            delay = 1.0
            if self._failing:
                log.info("audit.write_recovered", dropped=self.dropped)
                self._failing = False

    async def flush(self, timeout: float = 2.0) -> bool:
        """Write what is queued now (bounded); False if PostgreSQL did not take it."""
        try:
            async with asyncio.timeout(timeout):
                await self._write_pending()
        except _FAULTS as exc:
            log.warning("audit.flush_failed", error=type(exc).__name__, pending=self.pending)
            return False
        return True

    async def _write_pending(self) -> None:
        async with self._writing:
            while self._pending:
                batch = [self._pending[i] for i in range(min(BATCH, len(self._pending)))]
                async with asyncio.timeout(self._timeout):
                    await self._pool.executemany(
                        f"INSERT INTO audit_log ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        [e.row() for e in batch],
                    )
                for _ in batch:  # only now: a failed batch stays queued, in order
                    self._pending.popleft()

    async def query(
        self,
        *,
        owner_id: int | None = None,
        since: datetime | None = None,
        action: str | None = None,
        target: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditRow]:
        """Newest first. `owner_id` (an owner's view) keeps only that owner's rows;
        `action` matches a whole action or a prefix ending in "." (e.g. "bot.");
        `before` is the id of the last row of the previous page."""
        rows = await self._pool.fetch(
            f"SELECT id, at, {_COLUMNS} FROM audit_log"
            " WHERE ($1::bigint IS NULL OR owner_id = $1)"
            " AND ($2::timestamptz IS NULL OR at >= $2)"
            " AND ($3::text IS NULL OR action = $3"
            "      OR (right($3, 1) = '.' AND starts_with(action, $3)))"
            " AND ($4::text IS NULL OR target = $4)"
            " AND ($5::bigint IS NULL OR id < $5)"
            " ORDER BY id DESC LIMIT $6",
            owner_id,
            since,
            action,
            target,
            before,
            limit,
            timeout=self._timeout,
        )
        return [
            AuditRow(
                id=r["id"],
                at=r["at"],
                actor=r["actor"],
                owner_id=r["owner_id"],
                action=r["action"],
                target=r["target"],
                source=r["source"],
                outcome=r["outcome"],
                detail=json.loads(r["detail"]) if isinstance(r["detail"], str) else r["detail"],
            )
            for r in rows
        ]

    async def prune(self, retention_days: int) -> int:
        """Delete rows older than `retention_days` (0: keep all); how many went."""
        if retention_days <= 0:
            return 0
        status = await self._pool.execute(
            "DELETE FROM audit_log WHERE at < now() - make_interval(days => $1)",
            retention_days,
            timeout=self._timeout * 6,
        )
        return int(status.rsplit(" ", 1)[-1])


@contextlib.asynccontextmanager
async def open_audit(pool: asyncpg.Pool, timeout: float = 10.0) -> AsyncIterator[AuditLog]:
    """An AuditLog with its writer running; at exit what is queued gets up to 2 s."""
    audit = AuditLog(pool, timeout)
    writer = asyncio.create_task(audit.run(), name="audit:writer")
    try:
        yield audit
    finally:
        # flush first (it waits for a write in flight), then stop the idle writer: a write
        # cancelled midway may have committed, and writing its batch again would double it
        if audit.pending:
            await audit.flush()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


_DURATION: Final = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since` / `?since=`: a duration back from now (`90s`, `30m`, `24h`, `7d`) or an ISO
    8601 date or time (UTC unless it says otherwise). ValueError names what is allowed."""
    now = now or datetime.now(UTC)
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"since: {text[:40]!r} is neither a duration like 24h or 7d nor an ISO 8601 "
            "date or time like 2026-12-01 or 2026-12-01T08:00:00Z"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
