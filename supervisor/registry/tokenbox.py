"""Bot tokens encrypted at rest with AES-GCM (the `cryptography` package), under a keyring.

The current key encrypts; every key of the keyring decrypts, chosen by the row's
`key_id` (the first 12 hex digits of the key's SHA-256). Keys come from
`security.encryption_key` (current) plus `security.previous_keys` (decrypt-only), or,
with no configured key, from the state directory's keyring file (supervisor/registry/keyfile.py),
which a box re-reads when it changes: after `botvisor keys rotate --generate` a running
process encrypts under the new key and decrypts rows under either. The bot id is the
associated data, so a ciphertext cannot be moved to another bot's row.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bots.telegram.token import BotToken
from config import ConfigError, Settings
from supervisor.registry.keyfile import KEY_BYTES, KeyFile, Stamp, decode_key

_NONCE = 12


class TokenDecryptError(Exception):
    """A stored token does not decrypt with any key of the keyring (wrong or dropped key)."""


def key_id_of(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


class _Ring:
    """An immutable keyring: swapped whole on refresh, so a reader never sees half of one."""

    __slots__ = ("by_id", "current", "ids")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError("security.encryption_key: no key configured")
        by_id: dict[str, AESGCM] = {}
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ConfigError("security.encryption_key: must be base64 of exactly 32 bytes")
            by_id.setdefault(key_id_of(key), AESGCM(key))
        self.by_id = by_id
        self.ids = tuple(by_id)  # current first, then the others in keyring order
        self.current = self.ids[0]


class TokenBox:
    """Runs in any process. Not shared across threads."""

    __slots__ = ("_extra", "_file", "_ring", "_stamp")

    def __init__(
        self, key: bytes, previous: Sequence[bytes] = (), *, keyfile: KeyFile | None = None
    ) -> None:
        self._ring = _Ring([key, *previous])
        #: the keyring file this box follows (None: configured keys, fixed until reload)
        self._file = keyfile
        self._stamp: Stamp | None = keyfile.stamp() if keyfile is not None else None
        #: configured previous keys kept after a refresh from the file
        self._extra = tuple(previous) if keyfile is not None else ()

    @property
    def key_id(self) -> str:
        """Id of the current key, the one `encrypt` uses (as of the last `refresh`)."""
        return self._ring.current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id that decrypts, current first."""
        return self._ring.ids

    def seal(self, token: BotToken) -> tuple[str, bytes]:
        """(key id, nonce‖ciphertext) under the current key, read together."""
        self.refresh()
        ring = self._ring
        nonce = os.urandom(_NONCE)
        aad = str(token.bot_id).encode()
        return ring.current, nonce + ring.by_id[ring.current].encrypt(
            nonce, token.reveal().encode(), aad
        )

    def encrypt(self, token: BotToken) -> bytes:
        return self.seal(token)[1]

    def decrypt(self, bot_id: int, blob: bytes, key_id: str | None = None) -> BotToken:
        """The token of `bot_id`, with the key `key_id` names (every key, if None)."""
        if key_id is not None and key_id not in self._ring.by_id:
            self.refresh()  # a process that rotated the file may have added it
        ring = self._ring
        if key_id is None:
            candidates = list(ring.by_id.values())
        elif key_id in ring.by_id:
            candidates = [ring.by_id[key_id]]
        else:
            raise TokenDecryptError(
                f"bot {bot_id}: stored token is under key {key_id}, which is not in the "
                f"keyring ({', '.join(ring.ids)}); add that key to security.previous_keys"
            )
        aad = str(bot_id).encode()
        for aead in candidates:
            try:
                return BotToken(aead.decrypt(blob[:_NONCE], blob[_NONCE:], aad).decode())
            except (InvalidTag, ValueError):
                continue
        raise TokenDecryptError(
            f"bot {bot_id}: stored token does not decrypt with key "
            f"{key_id or ', '.join(ring.ids)}; check security.encryption_key"
        )

    def seal_secret(self, bot_id: int, secret: str) -> tuple[str, bytes]:
        """A bot's webhook secret_token, sealed like its token (own AAD: a token blob
        never opens as a secret, nor the reverse)."""
        self.refresh()
        ring = self._ring
        nonce = os.urandom(_NONCE)
        aad = b"webhook:%d" % bot_id
        return ring.current, nonce + ring.by_id[ring.current].encrypt(nonce, secret.encode(), aad)

    def open_secret(self, bot_id: int, blob: bytes, key_id: str) -> str:
        """The webhook secret `seal_secret` sealed. Raises TokenDecryptError."""
        if key_id not in self._ring.by_id:
            self.refresh()
        aead = self._ring.by_id.get(key_id)
        if aead is None:
            raise TokenDecryptError(f"bot {bot_id}: webhook secret is under unknown key {key_id}")
        try:
            return aead.decrypt(blob[:_NONCE], blob[_NONCE:], b"webhook:%d" % bot_id).decode()
        except (InvalidTag, ValueError):
            raise TokenDecryptError(f"bot {bot_id}: webhook secret does not decrypt") from None

    def refresh(self) -> bool:
        """Re-read the keyring file if it changed since we read it. True if it did."""
        if self._file is None:
            return False
        stamp = self._file.stamp()
        if stamp is None or stamp == self._stamp:
            return False  # a vanished file never replaces the keys we hold
        keys = self._file.load()
        self._ring = _Ring([*keys, *self._extra])
        self._stamp = stamp  # the stamp read before the keys: a later change is seen next time
        return True


def _configured(settings: Settings) -> tuple[bytes | None, list[bytes]]:
    sec = settings.security
    previous = [
        decode_key(k.get_secret_value().strip(), f"security.previous_keys[{i}]")
        for i, k in enumerate(sec.previous_keys)
    ]
    if sec.encryption_key is None:
        return None, previous
    return decode_key(sec.encryption_key.get_secret_value().strip(), "security.encryption_key"), (
        previous
    )


def keyfile_of(settings: Settings) -> KeyFile:
    return KeyFile(Path(settings.state.dir))


def load_key(settings: Settings) -> bytes:
    """The current key: the configured one, or the keyring file's first (created on first use)."""
    current, _ = _configured(settings)
    return current if current is not None else keyfile_of(settings).load()[0]


def open_tokenbox(settings: Settings) -> TokenBox:
    """The keyring of these settings. Raises ConfigError naming the bad key setting."""
    current, previous = _configured(settings)
    if current is not None:
        return TokenBox(current, previous)
    keyfile = keyfile_of(settings)
    keys = keyfile.load()
    return TokenBox(keys[0], [*keys[1:], *previous], keyfile=keyfile)
