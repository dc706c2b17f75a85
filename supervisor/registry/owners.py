"""Owners' API keys and who a request speaks for.

An owner's key is `bvo_<owner id>_<43 chars>`: 32 random bytes, shown once by
`botvisor owners add`. PostgreSQL keeps only SHA-256 of the random part (a fast hash is
enough for a high-entropy key; nothing to brute-force). The id in front finds the row
by primary key; the hash is then compared in constant time. `security.admin_key`
speaks for the admin, who sees every bot.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

from config import Settings
from supervisor.registry.bots import Registry
from supervisor.registry.owner_queries import OwnerRecord

KEY_PREFIX: Final = "bvo_"
_KEY = re.compile(r"^bvo_(\d{1,18})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: What a presented key may look like at all: printable ASCII, bounded.
_PRESENTABLE = re.compile(r"^[!-~]{1,512}$")


class BadOwnerName(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Caller:
    """Whom a request speaks for: the admin (every bot) or one owner (its own bots)."""

    owner_id: int | None
    admin: bool

    @property
    def scope(self) -> int | None:
        """The owner id to filter bots by; None for the admin (no filter)."""
        return None if self.admin else self.owner_id


ADMIN: Final = Caller(owner_id=None, admin=True)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadOwnerName(
            f"owner name {name!r}: use 1-64 letters, digits and . _ @ -, starting with a letter "
            "or digit"
        )
    return name


async def create_owner(registry: Registry, name: str) -> tuple[OwnerRecord, str]:
    """A new owner and its API key (the only time the key exists in the clear)."""
    secret = secrets.token_urlsafe(32)
    owner = await registry.add_owner(check_name(name), _hash(secret))
    return owner, f"{KEY_PREFIX}{owner.id}_{secret}"


async def authenticate(registry: Registry, settings: Settings, key: str) -> Caller | None:
    """The caller a presented key speaks for, or None. Never says which part was wrong.
    Any string is safe here: non-ASCII or overlong keys are simply wrong."""
    if not _PRESENTABLE.fullmatch(key):
        return None
    admin = settings.security.admin_key
    admin_key = admin.get_secret_value() if admin is not None else ""
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return ADMIN
    return await authenticate_owner(registry, key)


async def authenticate_owner(registry: Registry, key: str) -> Caller | None:
    """The owner an owner's API key speaks for, or None; the admin key is just wrong here."""
    match = _KEY.fullmatch(key) if _PRESENTABLE.fullmatch(key) else None
    if match is None:
        return None
    owner_id = int(match.group(1))
    stored = await registry.owner_key_hash(owner_id)
    if stored is None or not hmac.compare_digest(stored, _hash(match.group(2))):
        return None
    return Caller(owner_id=owner_id, admin=False)
