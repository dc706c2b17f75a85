"""The docs stand alone and keep up: CONFIGURATION.md is what the settings models say,
USAGE.md names every command of the parser, and no doc points outside the repository."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from config.reference import markdown
from supervisor.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_md_is_generated_from_the_settings_models() -> None:
    current = (ROOT / "docs" / "CONFIGURATION.md").read_text(encoding="utf-8")
    assert current == markdown(), "stale: run .venv/bin/python scripts/config_reference.py"
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def _commands() -> list[str]:
    parser = build_parser([])
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
                if nested:
                    out += [f"botvisor {name} {verb}" for verb in nested[0].choices]
                else:
                    out.append(f"botvisor {name}")
    return out


def test_usage_md_covers_every_command() -> None:
    usage = (ROOT / "docs" / "USAGE.md").read_text(encoding="utf-8")
    missing = [c for c in _commands() if c not in usage]
    assert not missing, f"docs/USAGE.md does not show: {missing}"
    for needle in ("/v1/bots", "/v1/openapi.json", "systemd", "owners add", "exit status"):
        assert needle in usage


def test_docs_do_not_point_outside_the_repository() -> None:
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text and "DESIGN.md" not in text, doc
