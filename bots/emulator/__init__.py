"""A fast in-process Telegram Bot API emulator for tests, the demo and benchmarks.

- `bots.emulator.state`: bots, update queues, flood windows, stats (no I/O).
- `bots.emulator.server`: the HTTP server, `open_emulator()` and `run_emulator()`.
- `bots.emulator.control`: `EmulatorControl`, an async client of `/control/...`.
"""

from bots.emulator.control import ControlError, EmulatorBot, EmulatorControl, InjectMessage
from bots.emulator.server import (
    EmulatorServer,
    RunningEmulator,
    open_emulator,
    raise_nofile_limit,
    run_emulator,
    serve,
)
from bots.emulator.state import EmulatorState, Limit, RateLimits

__all__ = [
    "ControlError",
    "EmulatorBot",
    "EmulatorControl",
    "EmulatorServer",
    "EmulatorState",
    "InjectMessage",
    "Limit",
    "RateLimits",
    "RunningEmulator",
    "open_emulator",
    "raise_nofile_limit",
    "run_emulator",
    "serve",
]
