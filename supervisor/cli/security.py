"""`botvisor owners …` and `botvisor keys rotate`: owners' API keys, quotas and token
encryption keys. Every change is recorded in the audit log (source `cli`).

Run in a CLI process against the registry; the daemon may be running meanwhile.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from config import Settings
from supervisor.exitcodes import ExitCode
from supervisor.registry.audit import open_audit
from supervisor.registry.owner_queries import OwnerExists
from supervisor.registry.owners import ADMIN, BadOwnerName, create_owner
from supervisor.registry.tokenbox import key_id_of, keyfile_of
from supervisor.services import open_registry, open_services


def _out(text: str) -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(f"botvisor: {text}", file=sys.stderr, flush=True)


async def owners_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.owners_command in ("show", "set-quota"):
        from supervisor.cli.quotas import quota_command

        return await quota_command(settings, args)
    async with (
        open_services(settings, redis=False) as live,
        open_registry(live) as registry,
        open_audit(registry.pool, live.database.timeout_s) as audit,
    ):
        match args.owners_command:
            case "add":
                try:
                    owner, key = await create_owner(registry, args.name)
                except (BadOwnerName, OwnerExists) as exc:
                    _err(str(exc))
                    audit.record(ADMIN, "owner.create", "", source="cli", outcome="invalid")
                    return ExitCode.FAILURE
                audit.record(
                    ADMIN,
                    "owner.create",
                    f"owner:{owner.id}",
                    source="cli",
                    owner_id=owner.id,
                    detail={"name": owner.name},
                )
                _out(f"owner {owner.name} (id {owner.id}) created. Its API key, shown only now:")
                _out(key)
                return 0
            case "list":
                owners = await registry.owners()
                if args.json:
                    rows = [
                        {"id": o.id, "name": o.name, "bots": o.bots, "created_at": o.created_at}
                        for o in owners
                    ]
                    _out(orjson.dumps(rows).decode())
                    return 0
                _out(f"{'ID':>6}  {'NAME':<32} {'BOTS':>6}  CREATED")
                for o in owners:
                    created = o.created_at.isoformat(timespec="seconds")
                    _out(f"{o.id:>6}  {o.name:<32} {o.bots:>6}  {created}")
                _out(f"{len(owners)} owner(s)")
                return 0
    raise AssertionError(args.owners_command)


async def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    """`keys rotate [--generate]`: new keyring first (if asked), then every row moves to it."""
    if args.batch < 1:
        _err("--batch: must be at least 1")
        return ExitCode.FAILURE
    if args.generate:
        if settings.security.encryption_key is not None:
            _err(
                "--generate works on state.dir's key file, but security.encryption_key is set: "
                "put a new key (e.g. `openssl rand -base64 32`) in security.encryption_key, the "
                "old one in security.previous_keys, `botvisor reload`, then `botvisor keys rotate`"
            )
            return ExitCode.FAILURE
        key, keyring = keyfile_of(settings).push_new_key()
        _out(f"new current key {key_id_of(key)} in {keyfile_of(settings).path}")
        _out(f"keyring: {', '.join(key_id_of(k) for k in keyring)} (current first)")
    async with (
        open_services(settings, redis=False) as live,
        open_registry(live) as registry,
        open_audit(registry.pool, live.database.timeout_s) as audit,
    ):
        report = await registry.rotate_keys(args.batch)
        incomplete = bool(report.changed or report.undecryptable or report.secrets_undecryptable)
        audit.record(
            ADMIN,
            "keys.rotate",
            f"key:{report.key_id}",
            source="cli",
            outcome="incomplete" if incomplete else "ok",
            detail={
                "generated": bool(args.generate),
                "reencrypted": report.reencrypted,
                "already_current": report.already_current,
                "changed": report.changed,
                "undecryptable": len(report.undecryptable),
                "secrets_reencrypted": report.secrets_reencrypted,
                "secrets_undecryptable": len(report.secrets_undecryptable),
            },
        )
    _out(
        f"key {report.key_id}: re-encrypted {report.reencrypted} bot token(s), "
        f"{report.already_current} already under it, {report.changed} changed meanwhile, "
        f"{len(report.undecryptable)} undecryptable; "
        f"{report.secrets_reencrypted} webhook secret(s) re-encrypted"
    )
    if report.changed:
        _err("some rows changed during the rotation: run `botvisor keys rotate` again")
    if report.undecryptable:
        _err(
            f"bots whose token no key of the keyring decrypts: {_ids(report.undecryptable)}; "
            "add their key to security.previous_keys, or re-register them"
        )
    if report.secrets_undecryptable:
        _err(
            "bots whose webhook secret no key of the keyring decrypts: "
            f"{_ids(report.secrets_undecryptable)}; set their mode to webhook again "
            "(`botvisor bots update ID --mode webhook`) for a new one"
        )
    return ExitCode.FAILURE if incomplete else 0


def _ids(bot_ids: Sequence[int], limit: int = 20) -> str:
    """The first `limit` ids, and an ellipsis when there are more."""
    shown = ", ".join(str(i) for i in bot_ids[:limit])
    return shown + (" …" if len(bot_ids) > limit else "")
