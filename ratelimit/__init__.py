"""Telegram's outgoing rate limits for one bot: per bot, per private chat, per group.

`BotLimiter.acquire(chat_id)` is awaited before each send; `penalize` records a 429.
The numbers come from `config` (`ratelimit.*`); `Window` is the pure rule underneath.
"""

from ratelimit.limiter import BotLimiter, LimiterStats
from ratelimit.limits import ChatScope, Limits, Rate, chat_scope
from ratelimit.window import Window

__all__ = ["BotLimiter", "ChatScope", "LimiterStats", "Limits", "Rate", "Window", "chat_scope"]
