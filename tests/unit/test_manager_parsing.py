"""The manager bot's argument parsing and secret detection (bots/handlers/manager.py)."""

from __future__ import annotations

import pytest

from bots.handlers.manager import _bot_id


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("7000000001", 7000000001),
        ("@42", 42),
        ("0", None),
        ("١٢٣", None),  # Arabic-Indic digits
        ("１２３", None),  # full-width digits
        (str(2**63), None),
        (str(2**63 - 1), 2**63 - 1),
        ("99999999999999999999", None),
        ("-5", None),
    ],
)
def test_a_bot_id_argument_is_ascii_digits_within_int64(arg: str, expected: int | None) -> None:
    assert _bot_id(arg) == expected
