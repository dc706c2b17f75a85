"""The arguments of the owners' and the admin's commands: owners, audit, keys
(supervisor/cli/parser.py puts them in `botvisor`'s parser)."""

from __future__ import annotations

from typing import Any


def add_owners_commands(sub: Any) -> None:
    """owners (add, list, show, set-quota), audit, keys (rotate)."""
    owners = sub.add_parser("owners", help="owners of bots and their API keys")
    osub = owners.add_subparsers(dest="owners_command", required=True, metavar="ACTION")
    oadd = osub.add_parser(
        "add",
        help="create an owner; prints its API key once",
        description="Create an owner and print its API key for the admin API "
        "(Authorization: Bearer KEY). Only a hash is stored: the key is shown this once.",
    )
    oadd.add_argument("name", help="1-64 letters, digits and . _ @ -")
    olist = osub.add_parser("list", help="list owners and how many bots each has")
    olist.add_argument("--json", action="store_true")
    oshow = osub.add_parser(
        "show",
        help="an owner's quota and today's usage",
        description="Show an owner's quota (the [quotas] defaults unless set for it) and its "
        "usage today (UTC): bots, messages handled, LLM tokens.",
    )
    oshow.add_argument("owner", metavar="OWNER", help="owner name or id")
    oshow.add_argument("--json", action="store_true", help="print JSON")
    oquota = osub.add_parser(
        "set-quota",
        help="set an owner's quota (flags not given stay as they are)",
        description="Override the [quotas] defaults for one owner. Each value is a whole "
        "number (0 = unlimited) or `default` (use the configured default again). Bots over "
        "the quota keep running; new registrations are refused.",
    )
    oquota.add_argument("owner", metavar="OWNER", help="owner name or id")
    for flag in ("bots", "messages-per-day", "llm-tokens-per-day"):
        oquota.add_argument(
            f"--{flag}",
            type=_quota_value,
            default=...,
            metavar="N|default",
            help=f"{flag.replace('-', ' ')}: N (0 = unlimited) or `default`",
        )
    oquota.add_argument("--json", action="store_true", help="print the result as JSON")

    aud = sub.add_parser(
        "audit",
        help="who did what, when and from where (the audit log)",
        description="Rows of the audit log, oldest first: every owner/admin action from the "
        "admin API, the CLI and the manager bot, with its actor, source and outcome.",
    )
    aud.add_argument(
        "--since",
        metavar="WHEN",
        help="only rows since WHEN: a duration back (24h, 7d) or an ISO 8601 date/time",
    )
    aud.add_argument("--action", help="an action (bot.pause) or a prefix ending in '.' (bot.)")
    aud.add_argument("--target", help="a target, e.g. bot:123 or owner:7")
    aud.add_argument(
        "--limit", type=int, default=100, help="at most this many, the newest (default 100)"
    )
    aud.add_argument("--json", action="store_true", help="one JSON object per line")

    keys = sub.add_parser("keys", help="encryption keys of the stored bot tokens")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    rot = ksub.add_parser(
        "rotate",
        help="re-encrypt every stored token under the current key",
        description="Re-encrypt, in batches and while the daemon runs, every bot token not "
        "under the current key. Configured keys: first set security.encryption_key to the "
        "new key and security.previous_keys to the old ones, reload, then rotate. Key file "
        "in state.dir: --generate makes a new current key and keeps the old ones.",
    )
    rot.add_argument(
        "--generate",
        action="store_true",
        help="first add a new current key to state.dir's key file (no configured key only)",
    )
    rot.add_argument("--batch", type=int, default=500, help="rows per UPDATE (default 500)")


def _quota_value(text: str) -> int | None:
    from supervisor.cli.quotas import quota_value

    return quota_value(text)
