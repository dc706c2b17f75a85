"""The suite's secret grep: every log line this process writes, and every daemon log file
the harness collects, is checked for secrets (config/redact.py knows their shapes and
every value of every Settings built here). A line that still holds one is a leak.

tests/conftest.py routes every logger of the test process through our logging chain for
each test and fails the test that produced a leaking line; tests/daemon.py scans each
daemon's combined stdout/stderr when it stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from config.redact import contains_secret, redact


@dataclass
class LeakLog:
    """Leaking lines found since the last `take()`; each kept masked (never the secret)."""

    lines: list[str] = field(default_factory=list)
    scanned: int = 0

    def scan(self, text: str, where: str) -> None:
        for line in text.splitlines():
            self.scanned += 1
            if contains_secret(line):
                self.lines.append(f"{where}: {redact(line)[:500]}")

    def scan_file(self, path: Path) -> None:
        self.scan(path.read_text(errors="replace"), path.name)

    def take(self) -> list[str]:
        found, self.lines = self.lines, []
        return found


#: One per test session.
LEAKS = LeakLog()
