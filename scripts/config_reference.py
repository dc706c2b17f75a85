#!/usr/bin/env python3
"""Rewrite docs/CONFIGURATION.md from the settings models (config/settings.py and
config/sections/; run with the project's venv:
`.venv/bin/python scripts/config_reference.py`). `--check` only compares (exit 1 if stale)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.reference import markdown  # noqa: E402

TARGET = ROOT / "docs" / "CONFIGURATION.md"


def main(argv: list[str]) -> int:
    text = markdown()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is stale: run scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
