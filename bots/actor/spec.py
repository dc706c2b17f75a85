"""What an actor is told: the bot as the registry has it (`BotSpec`) and the host's poll
settings (`PollConfig`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bots.telegram.token import BotToken


@dataclass(frozen=True, slots=True)
class BotSpec:
    """What the registry says a bot should be. `revision` changes on every edit."""

    bot_id: int
    token: BotToken
    handler: str
    settings: Mapping[str, Any]
    revision: int
    #: known from registration: the actor then starts with a getUpdates, not a getMe
    username: str = ""
    #: how updates arrive: "polling" (getUpdates) or "webhook" (the ingress, via the inbox)
    mode: str = "polling"
    #: the webhook's secret_token (webhook mode only); never printed
    webhook_secret: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class PollConfig:
    poll_timeout_s: int
    inflight_max: int
    grace_s: float
    handler_retries: int = 3
    #: how long a stopping actor waits for its progress to reach Redis while writes land
    save_timeout_s: float = 5.0
    #: ... and how long without any write landing (a hung Redis) before it gives up
    save_stall_s: float = 1.0
    #: getUpdates failures (5xx, network) back off inside the poll loop up to this
    poll_backoff_max_s: float = 2.0
