"""Reconciliation as a pure function: desired bots vs running bots -> what to change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bots.actor.spec import BotSpec


@dataclass(frozen=True, slots=True)
class Plan:
    start: list[BotSpec] = field(default_factory=list)
    stop: list[int] = field(default_factory=list)
    restart: list[BotSpec] = field(default_factory=list)
    #: only settings changed: apply in place, keep the poll running
    retune: list[BotSpec] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.start or self.stop or self.restart or self.retune)


def plan_changes(desired: Mapping[int, BotSpec], running: Mapping[int, BotSpec]) -> Plan:
    """Pure: no I/O. A token, handler, mode or `telegram` settings change restarts (a mode
    switch is a stop of one update source, then the start of the other); any other
    settings-only change retunes."""
    plan = Plan()
    for bot_id, spec in desired.items():
        current = running.get(bot_id)
        if current is None:
            plan.start.append(spec)
        elif current.revision != spec.revision:
            if (
                current.token == spec.token
                and current.handler == spec.handler
                and current.mode == spec.mode
                and current.webhook_secret == spec.webhook_secret
                # where the bot reaches Telegram (api_base, proxy) is fixed per connection
                and current.settings.get("telegram") == spec.settings.get("telegram")
            ):
                plan.retune.append(spec)
            else:
                plan.restart.append(spec)
    plan.stop.extend(bot_id for bot_id in running if bot_id not in desired)
    return plan
