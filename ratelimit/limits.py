"""The numbers of Telegram's outgoing limits for one bot: `Rate` (at most `limit` per
`period_s`), `Limits` (per bot, per private chat, per group) and `chat_scope`, which of
the per-chat limits a chat gets. Built from the `ratelimit` config section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Self

if TYPE_CHECKING:
    from config.sections.messaging import RateLimitSection

ChatScope = Literal["private", "group"]


def chat_scope(chat_id: int | None) -> ChatScope | None:
    """Which per-chat limit applies: private chats are positive ids, groups and channels negative."""
    if chat_id is None:
        return None
    if chat_id > 0:
        return "private"
    if chat_id < 0:
        return "group"
    raise ValueError("chat_id 0 is not a Telegram chat; pass None for a call without a chat")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `limit` messages in any window of `period_s` seconds."""

    limit: int
    period_s: float

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"Rate.limit must be >= 1, got {self.limit}")
        if not 0 < self.period_s < float("inf"):
            raise ValueError(
                f"Rate.period_s must be a positive number of seconds, got {self.period_s}"
            )


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one bot. `margin_s` is added to every period to absorb network jitter."""

    per_bot: Rate
    per_chat: Rate
    per_group: Rate
    margin_s: float = 0.025
    #: Past this many chat keys, busy keys at the front are rotated so idle ones get evicted.
    idle_keys_max: int = 100_000

    def __post_init__(self) -> None:
        if not 0 <= self.margin_s < float("inf"):
            raise ValueError(f"Limits.margin_s must be >= 0 seconds, got {self.margin_s}")
        if self.idle_keys_max < 0:
            raise ValueError(f"Limits.idle_keys_max must be >= 0, got {self.idle_keys_max}")

    @classmethod
    def from_settings(cls, section: RateLimitSection) -> Self:
        """Build from the `ratelimit` config section (the one home of the numbers)."""
        return cls(
            per_bot=Rate(section.per_bot.limit, section.per_bot.period_s),
            per_chat=Rate(section.per_chat.limit, section.per_chat.period_s),
            per_group=Rate(section.per_group.limit, section.per_group.period_s),
            margin_s=section.margin_s,
            idle_keys_max=section.idle_keys_max,
        )

    @classmethod
    def telegram_defaults(cls) -> Self:
        """Telegram's documented limits (30/s per bot, 1/s per chat, 20/min per group), from config defaults."""
        from config.sections.messaging import RateLimitSection

        return cls.from_settings(RateLimitSection.model_validate({}))

    def rate_for(self, chat_id: int) -> Rate:
        return self.per_chat if chat_scope(chat_id) == "private" else self.per_group
