"""Broadcasts as the admin API, `botvisor broadcast` and the dashboard start,
follow and cancel them: one path, one owner check.

Runs in the master (API handlers) or a CLI process. Starting one only writes a row:
the worker that runs the bot picks it up within `broadcasts.scan_interval_s` and sends
it (supervisor/worker/broadcaster.py). Another owner's bot, or a broadcast of another
bot, is a 404 exactly like one that does not exist.

For the dashboard: `BroadcastService(registry, settings, audit=, source=)`
`.start(caller, bot_id, message)`, `.progress(caller, bot_id, broadcast_id)`,
`.cancel(caller, bot_id, broadcast_id)`, `.recent(caller, bot_id)`; each returns a
`BroadcastRecord` (`.remaining`, `.eta_s`). Starts and cancels (and their refusals) are
recorded in the audit log here, once for every surface: `broadcast.start` and
`broadcast.cancel`, target `bot:<id>/broadcast:<id>`, owner = the bot's owner; the row
holds counts and the parse mode, never the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from config import Settings
from supervisor.registry.audit import AuditLog
from supervisor.registry.bot_records import BotRecord
from supervisor.registry.bot_service_errors import BotServiceError, ErrorKind
from supervisor.registry.bots import Registry
from supervisor.registry.broadcast_records import BroadcastRecord
from supervisor.registry.broadcasts import BroadcastStore
from supervisor.registry.chats import audience
from supervisor.registry.owners import Caller

log = structlog.get_logger(__name__)

#: Telegram's limit on a message's text
TEXT_MAX = 4096


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class Button(BaseModel):
    """An inline button under the message: opens `url`, or sends `callback_data` to the bot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: Text = Field(min_length=1, max_length=64, description="The button's label.")
    url: Text | None = Field(
        None, max_length=2048, pattern=r"^(https?|tg)://\S+$", description="Link it opens."
    )
    callback_data: Text | None = Field(
        None, min_length=1, max_length=64, description="Sent to the bot when pressed."
    )

    @model_validator(mode="after")
    def _one_action(self) -> Button:
        if (self.url is None) == (self.callback_data is None):
            raise ValueError("give exactly one of `url` and `callback_data`")
        return self


class NewBroadcast(BaseModel):
    """One message to every chat the bot has seen and that has not blocked it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: Text = Field(min_length=1, max_length=TEXT_MAX, description="The message text.")
    parse_mode: Literal["HTML", "MarkdownV2", "Markdown"] | None = Field(
        None, description="Telegram's parse_mode for the text."
    )
    buttons: list[list[Button]] = Field(
        default_factory=list,
        max_length=10,
        description="Inline keyboard: rows of buttons (at most 10 rows of 8).",
    )
    dry_run: bool = Field(False, description="Only count the audience; send nothing.")

    @model_validator(mode="after")
    def _rows(self) -> NewBroadcast:
        for row in self.buttons:
            if not 1 <= len(row) <= 8:
                raise ValueError("buttons: each row holds 1 to 8 buttons")
        return self

    def reply_markup(self) -> dict[str, Any] | None:
        if not self.buttons:
            return None
        rows = [[b.model_dump(exclude_none=True) for b in row] for row in self.buttons]
        return {"inline_keyboard": rows}


def _not_found(what: str) -> BotServiceError:
    return BotServiceError(ErrorKind.NOT_FOUND, "not_found", f"{what} does not exist")


class BroadcastService:
    """One caller's broadcasts. Cheap: build one per request."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        *,
        audit: AuditLog | None = None,
        source: str = "unknown",
    ) -> None:
        """`audit`: where starts and cancels are recorded (None: not recorded); `source`:
        where the calls come from ("http:<ip>", "dashboard:<ip>", "cli")."""
        self._registry = registry
        self._timeout = settings.database.timeout_s
        self._store = BroadcastStore(registry.pool, self._timeout)
        self._audit = audit
        self._source = source

    async def _check_bot(self, caller: Caller, bot_id: int) -> BotRecord:
        record = await self._registry.get(bot_id, owner_id=caller.scope)
        if record is None:
            # the same words as for any unknown bot: another owner's bot ids don't leak
            raise BotServiceError(
                ErrorKind.NOT_FOUND, "not_found", f"bot {bot_id} is not registered"
            )
        return record

    async def audience(self, caller: Caller, bot_id: int) -> int:
        """How many chats a broadcast would go to now (a dry run)."""
        await self._check_bot(caller, bot_id)
        return await audience(self._registry.pool, bot_id, self._timeout)

    async def start(self, caller: Caller, bot_id: int, message: NewBroadcast) -> BroadcastRecord:
        with self._refusals(caller, "broadcast.start", f"bot:{bot_id}"):
            bot = await self._check_bot(caller, bot_id)
            record = await self._store.create(
                bot_id, message.text, message.parse_mode, message.reply_markup()
            )
        log.info("broadcast.created", bot_id=bot_id, broadcast_id=record.id, total=record.total)
        detail = {
            "total": record.total,
            "parse_mode": message.parse_mode,
            "buttons": sum(len(row) for row in message.buttons),
        }
        self._record(caller, "broadcast.start", record, bot.owner_id, detail)
        return record

    async def progress(self, caller: Caller, bot_id: int, broadcast_id: int) -> BroadcastRecord:
        await self._check_bot(caller, bot_id)
        record = await self._store.get(bot_id, broadcast_id)
        if record is None:
            raise _not_found(f"broadcast {broadcast_id} of bot {bot_id}")
        return record

    async def recent(self, caller: Caller, bot_id: int, limit: int = 50) -> list[BroadcastRecord]:
        await self._check_bot(caller, bot_id)
        return await self._store.recent(bot_id, limit)

    async def cancel(self, caller: Caller, bot_id: int, broadcast_id: int) -> BroadcastRecord:
        """Stop it (its sender stops within about a second); a finished one stays as it is."""
        with self._refusals(caller, "broadcast.cancel", f"bot:{bot_id}/broadcast:{broadcast_id}"):
            bot = await self._check_bot(caller, bot_id)
            record = await self._store.cancel(bot_id, broadcast_id)
            if record is None:
                raise _not_found(f"broadcast {broadcast_id} of bot {bot_id}")
        log.info("broadcast.cancel", bot_id=bot_id, broadcast_id=broadcast_id, state=record.state)
        detail = {"state": str(record.state), "sent": record.sent, "remaining": record.remaining}
        self._record(caller, "broadcast.cancel", record, bot.owner_id, detail)
        return record

    # -- the audit log ----------------------------------------------------------------------

    def _record(
        self,
        caller: Caller,
        action: str,
        record: BroadcastRecord,
        owner_id: int | None,
        detail: dict[str, Any],
    ) -> None:
        if self._audit is None:
            return
        self._audit.record(
            caller,
            action,
            f"bot:{record.bot_id}/broadcast:{record.id}",
            source=self._source,
            detail={k: v for k, v in detail.items() if v is not None},
            # the bot's owner, so an owner sees the admin's broadcasts of its bots too
            owner_id=owner_id if owner_id is not None else caller.owner_id,
        )

    @contextmanager
    def _refusals(self, caller: Caller, action: str, target: str) -> Iterator[None]:
        """A refused start or cancel is recorded too (best effort, as BotService does)."""
        try:
            yield
        except BotServiceError as exc:
            if self._audit is not None:
                self._audit.record(caller, action, target, source=self._source, outcome=exc.code)
            raise
