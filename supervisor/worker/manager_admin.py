"""`FleetAdmin` for the manager bot (bots/handlers/manager.py), built on the one path
every bot change takes (supervisor/registry/bot_service.py), the owners' keys (owners.py) and the
Telegram links (owner_links.py).

Runs in a worker's event loop, in the manager bot's chat tasks. Each call acts as the
linked owner, exactly as that owner's API key would over HTTP: another owner's bot is
"not found". Outages (PostgreSQL, Telegram) become `Refusal.UNAVAILABLE`; tokens and
keys are never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

import aiohttp
import asyncpg
import redis.asyncio as aioredis
import structlog

from bots.handlers.fleet_admin import FleetAdminError, ManagedBot, Refusal
from bots.telegram.token import BadToken, BotToken
from config import Settings
from supervisor.registry.audit import AuditLog
from supervisor.registry.bot_records import BotRecord
from supervisor.registry.bot_service import BotService
from supervisor.registry.bot_service_errors import BotServiceError
from supervisor.registry.bots import Registry
from supervisor.registry.lockout import Lockout
from supervisor.registry.owner_links import OwnerLinks
from supervisor.registry.owners import Caller, authenticate_owner

log = structlog.get_logger(__name__)

#: BotServiceError codes -> what the manager tells the user.
_REFUSALS: Final = {
    "not_found": Refusal.NOT_FOUND,
    "already_registered": Refusal.ALREADY_REGISTERED,
    "invalid_token": Refusal.BAD_TOKEN,
    "token_rejected": Refusal.TOKEN_REJECTED,
    "telegram_unavailable": Refusal.UNAVAILABLE,
    "quota_exceeded": Refusal.QUOTA_EXCEEDED,
}


def _bot(record: BotRecord) -> ManagedBot:
    return ManagedBot(record.id, record.username, str(record.state), record.disabled_reason)


def _source(user_id: int | None) -> str:
    """Where a manager bot action comes from, as the audit log names it."""
    return "telegram" if user_id is None else f"telegram:{user_id}"


def _owner(owner_id: int) -> Caller:
    return Caller(owner_id=owner_id, admin=False)


@contextmanager
def _outage(op: str) -> Iterator[None]:
    """PostgreSQL errors and timeouts: tell the user to try again, log the error type."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        log.warning("manager.unavailable", op=op, error=type(exc).__name__)
        raise FleetAdminError(Refusal.UNAVAILABLE) from None


class ManagerAdmin:
    def __init__(
        self,
        registry: Registry,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        settings: Callable[[], Settings],
        redis: aioredis.Redis | None = None,
        *,
        audit: AuditLog | None = None,
    ) -> None:
        """`settings` returns the worker's current settings (they change on reload);
        `audit` records every change and login with source `telegram:<user id>`."""
        self._redis = redis  # the worker's client, for reconcile hints
        self._audit = audit
        self._registry = registry
        self._session = session
        self._settings = settings
        self._links = OwnerLinks(pool, settings().database.timeout_s)
        sec = settings().security
        #: wrong keys per Telegram user (numbers as at start)
        self._lockout = Lockout(free=sec.login_free_failures, max_s=sec.login_lockout_max_s)

    def _service(self, user_id: int | None = None) -> BotService:
        return BotService(
            self._registry,
            self._settings(),
            self._session,
            self._redis,
            audit=self._audit,
            source=_source(user_id),
        )

    def _record(self, who: Caller | str, action: str, user_id: int, outcome: str) -> None:
        if self._audit is not None:
            self._audit.record(
                who, action, f"telegram:{user_id}", source=_source(user_id), outcome=outcome
            )

    async def login(self, user_id: int, api_key: str) -> str | None:
        source = f"telegram:{user_id}"
        if self._lockout.retry_after(source) > 0:
            log.info("manager.login_refused", user_id=user_id, reason="locked out")
            self._record("unknown", "manager.login", user_id, "locked_out")
            raise FleetAdminError(Refusal.LOCKED_OUT)
        with _outage("login"):
            caller = await authenticate_owner(self._registry, api_key)
            if caller is None or caller.owner_id is None:
                failures, locked_s = self._lockout.failed(source)
                log.warning(
                    "manager.login_failed", user_id=user_id, failures=failures, locked_s=locked_s
                )
                self._record("unknown", "manager.login", user_id, "bad_key")
                return None
            owner = await self._links.link(user_id, caller.owner_id)
        log.info("manager.login", user_id=user_id, owner_id=caller.owner_id)
        self._record(caller, "manager.login", user_id, "ok")
        return owner

    async def logout(self, user_id: int) -> bool:
        with _outage("logout"):
            owner_id = await self._links.owner_of(user_id)
            linked = await self._links.unlink(user_id)
        log.info("manager.logout", user_id=user_id, linked=linked)
        who: Caller | str = "unknown" if owner_id is None else _owner(owner_id)
        self._record(who, "manager.logout", user_id, "ok" if linked else "not_logged_in")
        return linked

    async def owner_of(self, user_id: int) -> int | None:
        with _outage("owner_of"):
            return await self._links.owner_of(user_id)

    async def register(
        self, owner_id: int, token: str, *, user_id: int | None = None
    ) -> ManagedBot:
        try:
            bot_id = BotToken(token).bot_id
        except BadToken:
            raise FleetAdminError(Refusal.BAD_TOKEN) from None
        with _outage("register"):
            try:
                svc = self._service(user_id)
                return _bot(await svc.register(_owner(owner_id), token))
            except BotServiceError as exc:
                refusal = self._refusal(exc, bot_id)
                if refusal is Refusal.ALREADY_REGISTERED:
                    mine = await self._registry.get(bot_id, owner_id=owner_id)
                    refusal = Refusal.ALREADY_YOURS if mine is not None else refusal
                raise FleetAdminError(refusal, bot_id) from None

    async def replace_token(
        self, owner_id: int, token: str, *, user_id: int | None = None
    ) -> ManagedBot:
        try:
            bot_id = BotToken(token).bot_id
        except BadToken:
            raise FleetAdminError(Refusal.BAD_TOKEN) from None
        with _outage("replace_token"):
            try:
                svc = self._service(user_id)
                return _bot(await svc.replace_token(_owner(owner_id), bot_id, token))
            except BotServiceError as exc:
                raise FleetAdminError(self._refusal(exc, bot_id), bot_id) from None

    async def list_bots(self, owner_id: int) -> list[ManagedBot]:
        with _outage("list"):
            return [_bot(r) for r in await self._service().list(_owner(owner_id))]

    async def pause(self, owner_id: int, bot_id: int, *, user_id: int | None = None) -> ManagedBot:
        with _outage("pause"):
            try:
                return _bot(await self._service(user_id).pause(_owner(owner_id), bot_id))
            except BotServiceError as exc:
                raise FleetAdminError(self._refusal(exc, bot_id), bot_id) from None

    async def resume(self, owner_id: int, bot_id: int, *, user_id: int | None = None) -> ManagedBot:
        with _outage("resume"):
            try:
                return _bot(await self._service(user_id).resume(_owner(owner_id), bot_id))
            except BotServiceError as exc:
                raise FleetAdminError(self._refusal(exc, bot_id), bot_id) from None

    async def remove(self, owner_id: int, bot_id: int, *, user_id: int | None = None) -> None:
        with _outage("remove"):
            try:
                await self._service(user_id).remove(_owner(owner_id), bot_id)
            except BotServiceError as exc:
                raise FleetAdminError(self._refusal(exc, bot_id), bot_id) from None

    @staticmethod
    def _refusal(exc: BotServiceError, bot_id: int) -> Refusal:
        refusal = _REFUSALS.get(exc.code)
        if refusal is None:  # a request the manager never makes (handler, owner names)
            log.error("manager.unexpected_refusal", code=exc.code, bot_id=bot_id)
            return Refusal.UNAVAILABLE
        return refusal
