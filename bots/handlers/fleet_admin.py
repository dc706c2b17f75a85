"""What the manager bot may do to the fleet, as seen from `bots/` (which never imports
`supervisor`). The supervisor implements `FleetAdmin` (supervisor/worker/manager_admin.py) and a
worker hands it to the `manager` handler through `HandlerDeps.admin`.

Every method runs in the calling chat's task and does bounded I/O; failures the user
should hear about are `FleetAdminError`s, whose `refusal` the handler turns into text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ManagedBot:
    """One of an owner's bots, as the manager shows it (never its token)."""

    id: int
    username: str
    #: active | paused | disabled (the `bots.state` column)
    state: str
    disabled_reason: str | None = None


class Refusal(StrEnum):
    #: no such bot, or another owner's (the same answer, so ids don't leak)
    NOT_FOUND = "not_found"
    #: the token's bot is registered already, by someone else
    ALREADY_REGISTERED = "already_registered"
    #: the token's bot is registered already, by this owner
    ALREADY_YOURS = "already_yours"
    #: not shaped like a bot token
    BAD_TOKEN = "bad_token"
    #: Telegram answered getMe with 401: revoked or mistyped
    TOKEN_REJECTED = "token_rejected"
    #: too many wrong keys from this Telegram user: locked out for a while
    LOCKED_OUT = "locked_out"
    #: Telegram, PostgreSQL or Redis did not answer in time; try again
    UNAVAILABLE = "unavailable"
    #: the owner has as many bots as its quota allows
    QUOTA_EXCEEDED = "quota_exceeded"


class FleetAdminError(Exception):
    def __init__(self, refusal: Refusal, bot_id: int | None = None) -> None:
        super().__init__(f"{refusal}" + ("" if bot_id is None else f" (bot {bot_id})"))
        self.refusal = refusal
        self.bot_id = bot_id


class FleetAdmin(Protocol):
    """One owner's fleet, and which owner a Telegram user speaks for."""

    async def login(self, user_id: int, api_key: str) -> str | None:
        """Link the Telegram user to the key's owner; the owner's name, or None for any
        key that is not an owner's (the admin key included: it is not told apart). Raises
        FleetAdminError(LOCKED_OUT) after too many wrong keys from this user."""
        ...

    async def logout(self, user_id: int) -> bool:
        """Unlink the user; False if it was not linked."""
        ...

    async def owner_of(self, user_id: int) -> int | None:
        """The owner the user is linked to, or None (never linked, or the key changed)."""
        ...

    # `user_id` (the Telegram user acting) is where the audit log says the change came from

    async def register(
        self, owner_id: int, token: str, *, user_id: int | None = None
    ) -> ManagedBot:
        """getMe, then store the bot for the owner and start it."""
        ...

    async def replace_token(
        self, owner_id: int, token: str, *, user_id: int | None = None
    ) -> ManagedBot:
        """getMe, then store the new token of the owner's bot (its id is in the token)."""
        ...

    async def list_bots(self, owner_id: int) -> list[ManagedBot]: ...

    async def pause(
        self, owner_id: int, bot_id: int, *, user_id: int | None = None
    ) -> ManagedBot: ...

    async def resume(
        self, owner_id: int, bot_id: int, *, user_id: int | None = None
    ) -> ManagedBot: ...

    async def remove(self, owner_id: int, bot_id: int, *, user_id: int | None = None) -> None: ...
