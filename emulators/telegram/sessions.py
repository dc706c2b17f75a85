"""logOut and close: a bot's session on this Bot API server, as Telegram's server keeps it.

* A bot is *launched* on this server by its first request (any method).
* `logOut` (leaving the cloud server for a local one): answers True, ends the bot's
  pending long poll with 401 and answers 401 "Unauthorized" to the bot for
  `logout_lock_s` (Telegram: "will not be able to log in back to the cloud Bot API
  server for 10 minutes"); then the bot may launch here again.
* `close` (leaving a local server): 429 "Too Many Requests: retry after N" in the first
  `close_after_launch_s` after the bot was launched (Telegram: "error 429 in the first 10
  minutes after the bot is launched"); else True, the pending long poll ends with 500
  "Internal Server Error: restart", and the next request launches the bot again.

Runs in the emulator's loop; its clock is the state's (tests may swap it).
"""

from __future__ import annotations

import math
from typing import Final

from emulators.telegram.bots import BotState
from emulators.telegram.results import OK_TRUE, UNAUTHORIZED, Result, error
from emulators.telegram.state import EmulatorState

#: Telegram's figures for both windows
TEN_MINUTES_S: Final = 600.0
CLOSED: Final = error(500, "Internal Server Error: restart")


class ServerSessions:
    """Launch times and logged-out bots of one emulator (keyed by bot id)."""

    def __init__(
        self,
        state: EmulatorState,
        *,
        logout_lock_s: float = TEN_MINUTES_S,
        close_after_launch_s: float = TEN_MINUTES_S,
    ) -> None:
        self.state = state
        self.logout_lock_s = logout_lock_s
        self.close_after_launch_s = close_after_launch_s
        self.launched_at: dict[int, float] = {}
        self.logged_out_until: dict[int, float] = {}
        self.log_outs = 0
        self.closes = 0

    def admit(self, bot: BotState) -> Result | None:
        """Before any method: the error a logged-out bot gets, else None (and launch)."""
        now = self.state.clock()
        until = self.logged_out_until.get(bot.id)
        if until is not None:
            if now < until:
                return UNAUTHORIZED
            del self.logged_out_until[bot.id]
        self.launched_at.setdefault(bot.id, now)
        return None

    def log_out(self, bot: BotState) -> Result:
        self.log_outs += 1
        self.launched_at.pop(bot.id, None)
        self.logged_out_until[bot.id] = self.state.clock() + self.logout_lock_s
        bot.resolve_waiter(UNAUTHORIZED)
        return OK_TRUE

    def close(self, bot: BotState) -> Result:
        now = self.state.clock()
        launched = self.launched_at.get(bot.id, now)
        wait = launched + self.close_after_launch_s - now
        if wait > 0:
            ra = max(1, math.ceil(wait))
            return error(429, f"Too Many Requests: retry after {ra}", ra)
        self.closes += 1
        self.launched_at.pop(bot.id, None)
        bot.resolve_waiter(CLOSED)
        return OK_TRUE
