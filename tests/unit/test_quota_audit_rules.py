"""The pure parts of quotas and the audit log: limits, `--since`, the audited statement."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from ipc.usage import UsageKind, utc_day
from supervisor.cli.quotas import quota_value
from supervisor.registry.audit import AuditEntry, audited, parse_since
from supervisor.registry.quotas import Quota, QuotaOverride

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_zero_means_unlimited_and_a_limit_admits_until_it_is_reached() -> None:
    assert Quota().allows(UsageKind.MESSAGES, 10**12)
    q = Quota(messages_per_day=3, llm_tokens_per_day=100)
    assert q.allows(UsageKind.MESSAGES, 2) and not q.allows(UsageKind.MESSAGES, 3)
    assert q.allows(UsageKind.LLM_TOKENS, 99) and not q.allows(UsageKind.LLM_TOKENS, 100)


def test_an_override_replaces_only_what_it_sets_and_zero_lifts_a_default() -> None:
    default = Quota(bots=5, messages_per_day=1000, llm_tokens_per_day=50)
    got = QuotaOverride(bots=0, llm_tokens_per_day=7).apply(default)
    assert got == Quota(bots=0, messages_per_day=1000, llm_tokens_per_day=7)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", datetime(2026, 12, 3, 11, 58, 30, tzinfo=UTC)),
        ("24h", datetime(2026, 12, 2, 12, 0, tzinfo=UTC)),
        ("7d", datetime(2026, 11, 26, 12, 0, tzinfo=UTC)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T08:00:00+02:00", datetime(2026, 12, 1, 6, 0, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_back_or_an_iso_time_in_utc(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


def test_a_since_that_is_neither_names_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="duration like 24h"):
        parse_since("yesterday", NOW)


def test_a_quota_flag_is_a_whole_number_or_default() -> None:
    assert quota_value("0") == 0 and quota_value("250") == 250 and quota_value("default") is None
    for bad in ("-1", "1.5", "lots", "٣"):
        with pytest.raises(argparse.ArgumentTypeError):
            quota_value(bad)


def test_the_audited_statement_numbers_its_parameters_after_the_changes() -> None:
    entry = AuditEntry("owner:7", "bot.pause", "bot:1", "cli", detail={"k": 1})
    sql, args = audited(
        "UPDATE bots SET x = $2 WHERE id = $1 RETURNING id, owner_id", [1, 2], entry
    )
    assert sql.startswith("WITH changed AS (UPDATE bots")
    assert "$3, changed.owner_id, $4, $5, $6, $7, $8::jsonb FROM changed" in sql
    assert args == [1, 2, "owner:7", "bot.pause", "bot:1", "cli", "ok", '{"k": 1}']
    assert audited("DELETE …", [1], None) == ("DELETE …", [1])


def test_a_utc_day_is_compact() -> None:
    assert utc_day(NOW) == "20261203"
