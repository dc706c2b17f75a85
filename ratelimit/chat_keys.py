"""A bot's chat keys: one sliding window per chat it sends to, least recently used first.

`BotLimiter` holds them in an OrderedDict and calls these functions from its event loop.
Idle keys (nobody inside acquire, a window that no longer constrains a send) are evicted
from the LRU front as the limiter goes (`sweep_keys`), or all at once when the worker is over
its budget (`evict_idle_keys`); a key still limiting a send is never dropped (that could earn
a 429).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from ratelimit.limits import Limits
from ratelimit.window import Window

#: Non-idle keys moved out of the way per acquire once over idle_keys_max.
_ROTATIONS_PER_SWEEP = 2


class ChatKey:
    """One chat's window, and its FIFO lock while anyone is using the key."""

    __slots__ = ("lock", "users", "window")

    def __init__(self, window: Window) -> None:
        self.window = window
        # Created by the first caller and dropped by the last, so idle keys stay small.
        self.lock: asyncio.Lock | None = None
        self.users = 0


def key_for(keys: OrderedDict[int, ChatKey], chat_id: int, limits: Limits) -> ChatKey:
    """The chat's key, made on first use and marked most recently used."""
    key = keys.get(chat_id)
    if key is None:
        rate = limits.rate_for(chat_id)
        key = ChatKey(Window(rate.limit, rate.period_s + limits.margin_s))
        keys[chat_id] = key
    else:
        keys.move_to_end(chat_id)
    return key


def enter_key(keys: OrderedDict[int, ChatKey], chat_id: int, limits: Limits, now: float) -> ChatKey:
    """A caller starts using the chat's key (`leave_key` when done); sweeps idle keys."""
    key = key_for(keys, chat_id, limits)
    key.users += 1
    if key.lock is None:
        key.lock = asyncio.Lock()
    # After marking the key used, so the sweep can never drop it under us.
    sweep_keys(keys, limits, now)
    return key


def leave_key(key: ChatKey) -> None:
    key.users -= 1
    if key.users == 0:
        key.lock = None  # nobody holds or waits on it


def sweep_keys(keys: OrderedDict[int, ChatKey], limits: Limits, now: float) -> None:
    """Evict idle keys from the LRU front; amortised O(1) per acquire.

    A key that is busy (callers inside acquire) or still constrains sends
    stops the sweep. Past idle_keys_max such keys are rotated to the back, a
    few per call, so idle keys queued behind them are still reached.
    """
    rotations = _ROTATIONS_PER_SWEEP
    while keys:
        chat_id = next(iter(keys))
        key = keys[chat_id]
        if key.users == 0 and key.window.idle(now):
            del keys[chat_id]
        elif rotations and len(keys) > limits.idle_keys_max:
            keys.move_to_end(chat_id)
            rotations -= 1
        else:
            return


def evict_idle_keys(keys: OrderedDict[int, ChatKey], now: float) -> int:
    """Drop every key nobody uses whose window no longer constrains a send; how many."""
    idle = [c for c, k in keys.items() if k.users == 0 and k.window.idle(now)]
    for chat_id in idle:
        del keys[chat_id]
    return len(idle)
