"""The systemd side: the notify protocol on a real datagram socket, and the unit file."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.master.sdnotify import Notifier

UNIT = Path(__file__).parents[2] / "systemd" / "botvisor.service"


def test_notify_sends_datagrams_to_the_named_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        n = Notifier(str(path))
        assert n.enabled
        assert n.notify("READY=1", "STATUS=serving")
        assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=serving"]


def test_notify_supports_abstract_sockets() -> None:
    name = f"botvisor-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and not n.notify("READY=1")


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier("/nonexistent").watchdog_interval == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # someone else's watchdog
    assert Notifier("/nonexistent").watchdog_interval is None


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is required (Debian package systemd)"
    botvisor = Path(sys.executable).parent / "botvisor"
    assert botvisor.exists()
    unit = tmp_path / "botvisor.service"
    unit.write_text(UNIT.read_text().replace("/opt/botvisor/.venv/bin/botvisor", str(botvisor)))
    proc = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    text = UNIT.read_text()
    for needle in (
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=",
        "RestartPreventExitStatus=78",
        "ProtectSystem=strict",
        "StateDirectory=",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=no",
    ):
        assert needle in text, needle
