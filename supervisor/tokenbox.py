"""Bot tokens encrypted at rest with AES-GCM (the `cryptography` package).

The key comes from `security.encryption_key` (base64 of 32 bytes) or, when unset,
from `<state.dir>/encryption.key`, created once with mode 0600. The bot id is the
associated data, so a ciphertext cannot be moved to another bot's row.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bots.token import BotToken
from config import ConfigError, Settings

_NONCE = 12


class TokenDecryptError(Exception):
    """A stored token does not decrypt with the configured key (wrong or rotated key)."""


class TokenBox:
    __slots__ = ("_aead", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("security.encryption_key: must be base64 of exactly 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:12]

    def encrypt(self, token: BotToken) -> bytes:
        nonce = os.urandom(_NONCE)
        aad = str(token.bot_id).encode()
        return nonce + self._aead.encrypt(nonce, token.reveal().encode(), aad)

    def decrypt(self, bot_id: int, blob: bytes) -> BotToken:
        try:
            plain = self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], str(bot_id).encode())
        except (InvalidTag, ValueError):
            raise TokenDecryptError(
                f"bot {bot_id}: stored token does not decrypt with key {self.key_id}; "
                "check security.encryption_key"
            ) from None
        return BotToken(plain.decode())


def load_key(settings: Settings) -> bytes:
    """The configured key, or the state directory's key file (created on first use)."""
    if settings.security.encryption_key is not None:
        raw = settings.security.encryption_key.get_secret_value()
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("security.encryption_key: not valid base64") from None
    path = Path(settings.state.dir) / "encryption.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.b64encode(key) + b"\n")
    try:
        return base64.b64decode(path.read_bytes().strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{path}: not a base64 encryption key") from None


def open_tokenbox(settings: Settings) -> TokenBox:
    return TokenBox(load_key(settings))
