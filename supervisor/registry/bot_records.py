"""What a row of the `bots` table is, as the registry reads it, and the registry's refusals."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import asyncpg

from config.bot_settings import BadBotSettings, check_bot_settings, shown


class BotState(StrEnum):
    """Values of the `bots.state` column."""

    #: should be polling
    ACTIVE = "active"
    #: kept, but not polling (owner's choice)
    PAUSED = "paused"
    #: Telegram rejected the token; `disabled_reason` says why
    DISABLED = "disabled"


class BotMode(StrEnum):
    """Values of the `bots.mode` column (migration 0006)."""

    #: the bot's actor long-polls getUpdates
    POLLING = "polling"
    #: Telegram posts updates to the host's webhook ingress
    WEBHOOK = "webhook"


class AlreadyRegistered(Exception):
    def __init__(self, bot_id: int) -> None:
        super().__init__(f"bot {bot_id} is already registered")
        self.bot_id = bot_id


class OwnerBotsQuota(Exception):
    """The owner already has as many bots as its quota allows."""

    def __init__(self, owner_id: int, limit: int) -> None:
        super().__init__(f"owner {owner_id} already has {limit} bot(s), its quota")
        self.owner_id = owner_id
        self.limit = limit


@dataclass(frozen=True, slots=True)
class BotRecord:
    """A row of `bots` without its token."""

    id: int
    owner_id: int | None
    username: str
    handler: str
    settings: Mapping[str, Any]
    state: BotState
    disabled_reason: str | None
    revision: int
    #: why the stored row could not be read whole (its settings are then shown empty)
    problem: str | None = None
    mode: BotMode = BotMode.POLLING

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner_id": self.owner_id,
            "username": self.username,
            "token": f"{self.id}:***",
            "handler": self.handler,
            "settings": shown(self.settings),  # a proxy's password masked
            "state": str(self.state),
            "disabled_reason": self.disabled_reason,
            "revision": self.revision,
            "problem": self.problem,
            "mode": str(self.mode),
        }


#: the columns `record_of` reads
COLUMNS: Final = "id, owner_id, username, handler, settings, state, disabled_reason, revision, mode"


def _stored_settings(raw: Any) -> tuple[dict[str, Any], str | None]:
    """A row's settings, or {} and why not: one unreadable row never breaks a list."""
    try:
        return check_bot_settings(json.loads(raw) if isinstance(raw, str) else raw), None
    except (ValueError, BadBotSettings, RecursionError) as exc:
        return {}, f"stored settings are unreadable ({exc}); replace them with PATCH"


def record_of(row: asyncpg.Record) -> BotRecord:
    """The record of a row selected with `COLUMNS`."""
    settings, problem = _stored_settings(row["settings"])
    return BotRecord(
        id=row["id"],
        owner_id=row["owner_id"],
        username=row["username"],
        handler=row["handler"],
        settings=settings,
        state=BotState(row["state"]),
        disabled_reason=row["disabled_reason"],
        revision=row["revision"],
        problem=problem,
        mode=BotMode(row["mode"]),
    )
