"""Fixtures of the in-process admin API rig (tests/e2e/admin_rig.py)."""

from tests.e2e.admin_rig import api, emulator

__all__ = ["api", "emulator"]
