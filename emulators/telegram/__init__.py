"""A fast in-process Telegram Bot API emulator for tests, the demo and benchmarks.

- `emulators.telegram.state`: bots, update queues, flood windows, stats (no I/O).
- `emulators.telegram.server`: the HTTP server, `open_emulator()` and `run_emulator()`.
- `emulators.telegram.control`: `EmulatorControl`, an async client of `/control/...`.
"""

from emulators.telegram.control import ControlError, EmulatorBot, EmulatorControl, InjectMessage
from emulators.telegram.server import (
    EmulatorServer,
    RunningEmulator,
    open_emulator,
    raise_nofile_limit,
    run_emulator,
    serve,
)
from emulators.telegram.state import EmulatorState, Limit, RateLimits

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
