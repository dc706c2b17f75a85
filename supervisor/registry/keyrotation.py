"""Re-encrypting stored bot tokens and webhook secrets under the current key, in batches,
while bots run.

Runs in the CLI process (`botvisor keys rotate`). Workers and the webhook ingress keep
running: every row they read is under a key of their keyring, before and after its update,
because the new key is in the keyring before the first row moves (configured: set
encryption_key and previous_keys and reload first; key file: `--generate` writes the new
keyring first). A row's token and its webhook secret move in the same UPDATE, so no row is
ever left with one under a key the operator is about to drop. Each batch is one UPDATE that
writes a row only if it still holds exactly what was read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from supervisor.registry.tokenbox import TokenBox, TokenDecryptError

_SELECT = (
    "SELECT id, key_id, token_encrypted, webhook_key_id, webhook_secret FROM bots"
    " WHERE (key_id <> $1 OR (webhook_secret IS NOT NULL AND webhook_key_id IS DISTINCT FROM $1))"
    " AND id > $2 ORDER BY id LIMIT $3"
)

# IS NOT DISTINCT FROM: a row without a secret must still match (NULL = NULL is not true).
_UPDATE = (
    "UPDATE bots AS b SET key_id = v.key_id, token_encrypted = v.blob,"
    " webhook_key_id = v.secret_key_id, webhook_secret = v.secret"
    " FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], $5::bytea[],"
    " $6::text[], $7::bytea[], $8::text[], $9::bytea[])"
    " AS v(id, key_id, blob, old_key_id, old_blob,"
    " secret_key_id, secret, old_secret_key_id, old_secret)"
    " WHERE b.id = v.id AND b.key_id = v.old_key_id AND b.token_encrypted = v.old_blob"
    " AND b.webhook_key_id IS NOT DISTINCT FROM v.old_secret_key_id"
    " AND b.webhook_secret IS NOT DISTINCT FROM v.old_secret"
    " RETURNING b.id"
)


@dataclass(slots=True)
class KeyRotation:
    """What one rotation did."""

    key_id: str
    reencrypted: int = 0
    #: webhook secret_tokens moved to the current key (in the same UPDATE as their token)
    secrets_reencrypted: int = 0
    #: rows changed by someone else between our read and our write; left for the next run
    changed: int = 0
    already_current: int = 0
    undecryptable: list[int] = field(default_factory=list)
    #: bots whose webhook secret no key opens (their token still moved; the bot gets 401s
    #: at the ingress until webhook mode is set again, which draws a new secret)
    secrets_undecryptable: list[int] = field(default_factory=list)


async def rotate_keys(
    pool: asyncpg.Pool, box: TokenBox, timeout: float, batch: int = 500
) -> KeyRotation:
    """Every row whose token or webhook secret is not under the current key, `batch` rows
    (keyset-paginated by id) at a time."""
    box.refresh()
    report = KeyRotation(box.key_id)
    after = -1
    while True:
        rows = await pool.fetch(_SELECT, report.key_id, after, batch, timeout=timeout)
        if not rows:
            break
        after = rows[-1]["id"]
        await _reencrypt(pool, box, timeout, rows, report)
    current = await pool.fetchval(
        "SELECT count(*) FROM bots WHERE key_id = $1", report.key_id, timeout=timeout
    )
    report.already_current = int(current) - report.reencrypted
    return report


_Row = tuple[int, str, bytes, str, bytes, str | None, bytes | None, str | None, bytes | None]


def _moved_secret(
    box: TokenBox, r: asyncpg.Record, report: KeyRotation
) -> tuple[str | None, bytes | None]:
    """(key id, blob) the row's secret should hold: resealed if under an old key, else as is
    (also when it does not open: reported, and kept so the row's token can still move)."""
    key_id, blob = r["webhook_key_id"], r["webhook_secret"]
    if blob is None or key_id == report.key_id:
        return key_id, blob
    try:
        secret = box.open_secret(r["id"], blob, key_id)
    except TokenDecryptError:
        report.secrets_undecryptable.append(r["id"])
        return key_id, blob
    return box.seal_secret(r["id"], secret)


async def _reencrypt(
    pool: asyncpg.Pool,
    box: TokenBox,
    timeout: float,
    rows: Sequence[asyncpg.Record],
    report: KeyRotation,
) -> None:
    values: list[_Row] = []
    for r in rows:
        old_key, old_blob = r["key_id"], r["token_encrypted"]
        if old_key == report.key_id:
            key_id, blob = old_key, old_blob  # only the secret moves
        else:
            try:
                token = box.decrypt(r["id"], old_blob, old_key)
            except TokenDecryptError:
                report.undecryptable.append(r["id"])
                continue
            key_id, blob = box.seal(token)
        secret_key_id, secret = _moved_secret(box, r, report)
        if key_id == old_key and secret_key_id == r["webhook_key_id"]:
            continue  # only a secret no key opens was out of date: nothing to write
        if key_id != report.key_id or secret_key_id not in (report.key_id, r["webhook_key_id"]):
            raise TokenDecryptError(
                f"the current key changed from {report.key_id} to {box.key_id} during the "
                "rotation; run `botvisor keys rotate` again"
            )
        values.append(
            (r["id"], key_id, blob, old_key, old_blob, secret_key_id, secret,
             r["webhook_key_id"], r["webhook_secret"])
        )  # fmt: skip
    if not values:
        return
    done = {
        row["id"]
        for row in await pool.fetch(
            _UPDATE, *(list(column) for column in zip(*values, strict=True)), timeout=timeout
        )
    }
    for v in values:
        if v[0] not in done:
            report.changed += 1
            continue
        report.reencrypted += v[3] != v[1]
        report.secrets_reencrypted += v[7] != v[5]
