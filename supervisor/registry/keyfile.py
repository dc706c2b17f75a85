"""The state directory's keyring file, used when `security.encryption_key` is unset.

`<state.dir>/encryption.key` holds one base64 key (32 bytes) a line, the current key
first, then earlier keys that still decrypt. A file of one line (the first version's
format) is a keyring of one. Created with mode 0600 on first use; replaced atomically
(write a temporary file, fsync, rename) under an exclusive lock, so a process reading
it sees either the old keyring or the new one.

Runs in any process; the reads are a few hundred bytes of local disk, so they are done
inline, and only at start, on a key id not seen before, and on a changed file stamp.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config import ConfigError

KEY_BYTES = 32
FILE_NAME = "encryption.key"

#: what identifies one version of the file: (inode, size, mtime in ns)
Stamp = tuple[int, int, int]


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def decode_key(text: str | bytes, where: str) -> bytes:
    """base64 of exactly 32 bytes, else ConfigError naming `where` (never the key)."""
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{where}: must be base64 of exactly {KEY_BYTES} bytes")
    return key


class KeyFile:
    """The keyring file of one state directory."""

    __slots__ = ("path",)

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME

    def stamp(self) -> Stamp | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self) -> list[bytes]:
        """The keyring, current key first; the file is created with a new key if missing."""
        if not self.path.exists():
            self._create()
        try:
            text = self.path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{self.path}: cannot read the key file ({type(exc).__name__})"
            ) from None
        keys = [
            decode_key(line.strip(), f"{self.path}:{number}")
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.startswith("#")
        ]
        if not keys:
            raise ConfigError(f"{self.path}: holds no key; delete it only if no bot is registered")
        return keys

    def push_new_key(self) -> tuple[bytes, list[bytes]]:
        """A new current key in front of the keyring; returns (new key, whole keyring)."""
        with self._locked():
            keys = self.load()
            key = new_key()
            keyring = [key, *keys]
            self._replace(keyring)
        return key, keyring

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # another process created it first: read theirs
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(new_key()) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _replace(self, keys: Sequence[bytes]) -> None:
        body = b"".join(base64.b64encode(k) + b"\n" for k in keys)
        fd, tmp = tempfile.mkstemp(prefix=".encryption.key.", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One rotation at a time per state directory (a lock file beside the keyring)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(FILE_NAME + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"{self.path}: another `botvisor keys rotate --generate` is running; "
                    "wait for it, then run again"
                ) from None
            yield
        finally:
            os.close(fd)
