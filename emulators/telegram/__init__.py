"""A fast in-process Telegram Bot API emulator for tests, the demo and benchmarks.

- `emulators.telegram.state`: `EmulatorState`, bots, update queues, stats (no I/O); its parts
  are books, updates, messages, with bots, limits (flood windows) and results (answers).
- `emulators.telegram.server`: the HTTP server, `open_emulator()` and `run_emulator()`; its
  routes are bot_routes (`/bot<token>/...`) and control_routes (`/control/...`), both on
  http_io (parameters in, JSON out).
- `emulators.telegram.control`: `EmulatorControl`, an async client of `/control/...`.
"""

from emulators.telegram.control import ControlError, EmulatorBot, EmulatorControl, InjectMessage
from emulators.telegram.limits import Limit, RateLimits
from emulators.telegram.server import (
    EmulatorServer,
    RunningEmulator,
    open_emulator,
    raise_nofile_limit,
    run_emulator,
    serve,
)
from emulators.telegram.state import EmulatorState

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
