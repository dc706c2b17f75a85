"""Re-encrypting stored bot tokens under the current key, in batches, while bots run.

Runs in the CLI process (`botvisor keys rotate`). Workers keep running: every row they
read is under a key of their keyring, before and after its update, because the new
key is in the keyring before the first row moves (configured: set encryption_key and
previous_keys and reload first; key file: `--generate` writes the new keyring first).
Each batch is one UPDATE that writes a row only if it still holds exactly what was read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from supervisor.registry.tokenbox import TokenBox, TokenDecryptError


@dataclass(slots=True)
class KeyRotation:
    """What one rotation did."""

    key_id: str
    reencrypted: int = 0
    #: rows changed by someone else between our read and our write; left for the next run
    changed: int = 0
    already_current: int = 0
    undecryptable: list[int] = field(default_factory=list)


async def rotate_keys(
    pool: asyncpg.Pool, box: TokenBox, timeout: float, batch: int = 500
) -> KeyRotation:
    """Every row not under the current key, `batch` rows (keyset-paginated by id) at a time."""
    box.refresh()
    report = KeyRotation(box.key_id)
    after = -1
    while True:
        rows = await pool.fetch(
            "SELECT id, key_id, token_encrypted FROM bots"
            " WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3",
            report.key_id,
            after,
            batch,
            timeout=timeout,
        )
        if not rows:
            break
        after = rows[-1]["id"]
        await _reencrypt(pool, box, timeout, rows, report)
    current = await pool.fetchval(
        "SELECT count(*) FROM bots WHERE key_id = $1", report.key_id, timeout=timeout
    )
    report.already_current = int(current) - report.reencrypted
    return report


async def _reencrypt(
    pool: asyncpg.Pool,
    box: TokenBox,
    timeout: float,
    rows: Sequence[asyncpg.Record],
    report: KeyRotation,
) -> None:
    values: list[tuple[int, str, bytes, str, bytes]] = []
    for r in rows:
        try:
            token = box.decrypt(r["id"], r["token_encrypted"], r["key_id"])
        except TokenDecryptError:
            report.undecryptable.append(r["id"])
            continue
        key_id, blob = box.seal(token)
        if key_id != report.key_id:
            raise TokenDecryptError(
                f"the current key changed from {report.key_id} to {key_id} during the "
                "rotation; run `botvisor keys rotate` again"
            )
        values.append((r["id"], key_id, blob, r["key_id"], r["token_encrypted"]))
    if not values:
        return
    status = await pool.execute(
        "UPDATE bots AS b SET key_id = v.key_id, token_encrypted = v.blob"
        " FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], $5::bytea[])"
        " AS v(id, key_id, blob, old_key_id, old_blob)"
        " WHERE b.id = v.id AND b.key_id = v.old_key_id AND b.token_encrypted = v.old_blob",
        *(list(column) for column in zip(*values, strict=True)),
        timeout=timeout,
    )
    done = int(status.rsplit(" ", 1)[-1])
    report.reencrypted += done
    report.changed += len(values) - done
