"""Settings of messages in and out: rate limits, chat context, the webhook ingress, the
chats table and broadcasts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from config.sections.base import Section


class Rate(Section):
    """At most `limit` messages in any window of `period_s` seconds."""

    limit: int = Field(ge=1, le=100_000, description="Messages allowed per window.")
    period_s: float = Field(gt=0, le=3600, description="Window length in seconds.")


class RateLimitSection(Section):
    per_bot: Rate = Field(
        Rate(limit=30, period_s=1.0), description="Per bot, all chats (Telegram: 30/s)."
    )
    per_chat: Rate = Field(
        Rate(limit=1, period_s=1.0), description="Per private chat (Telegram: 1/s)."
    )
    per_group: Rate = Field(
        Rate(limit=20, period_s=60.0), description="Per group chat (Telegram: 20/min)."
    )
    margin_s: float = Field(
        0.025,
        ge=0,
        le=5,
        description="Added to every window so network jitter never crosses a limit.",
    )
    idle_keys_max: int = Field(
        100_000, ge=100, description="Idle chat keys kept per bot before eviction."
    )
    chat_keys_worker_max: int = Field(
        100_000,
        ge=0,
        description="Chat keys (per-chat windows, ~370 B each) held by all bots of one "
        "worker; past it every bot's idle keys are evicted at the next heartbeat. Keys still "
        "limiting a send are never dropped. Ignored in a bot's own settings.",
    )


class ContextSection(Section):
    dialog_ttl_s: int = Field(7200, ge=1, description="TTL of dialog state in Redis.")
    messages_ttl_s: int = Field(86_400, ge=1, description="TTL of recent messages in Redis.")
    prefs_ttl_s: int = Field(2_592_000, ge=1, description="TTL of preferences in Redis.")
    cache_entries: int = Field(1000, ge=0, description="Chats cached in each actor's LRU.")
    cache_bytes: int = Field(1_048_576, ge=0, description="Bytes cached in each actor's LRU.")
    cache_bytes_worker: int = Field(
        33_554_432,
        ge=0,
        description="Bytes cached across all bots of one worker (LRU across bots; an "
        "evicted chat reloads from Redis). 32 MiB: 2 workers of 5,000 bots fit 512 MiB.",
    )
    max_messages: int = Field(50, ge=1, le=10_000, description="Recent messages kept per chat.")


class WebhookSection(Section):
    """Webhook mode (`botvisor bots update ID --mode webhook`): one ingress per host."""

    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Public base URL Telegram posts to; each bot's webhook is this plus "
        "`/tg/{bot_id}`. Telegram needs https on port 443, 80, 88 or 8443 (a local Bot API "
        "server also takes http). Unset: webhook mode is off and no ingress listens.",
    )
    host: str = Field("127.0.0.1", description="Address the webhook ingress listens on.")
    port: int = Field(8443, ge=0, le=65_535, description="Port of the ingress; 0 picks one.")
    allowed_updates: list[str] = Field(
        default_factory=list,
        description="Update types Telegram sends (setWebhook allowed_updates), e.g. "
        '["message", "callback_query"]. Empty: the default of Telegram (all but a few).',
    )
    max_connections: int = Field(
        40,
        ge=1,
        le=100_000,
        description="Concurrent connections Telegram opens per bot (1-100; a local Bot API "
        "server allows up to 100000).",
    )
    certificate: Path | None = Field(
        None,
        description="Public key certificate (PEM) uploaded with setWebhook for a "
        "self-signed ingress; unset for a certificate from a public CA.",
    )
    backlog_max: int = Field(
        50_000,
        ge=1,
        le=10_000_000,
        description="Unhandled updates per shard stream before the ingress answers 429 "
        "with Retry-After (Telegram retries later; nothing is dropped).",
    )
    retry_after_s: int = Field(
        5,
        ge=1,
        le=3600,
        description="Retry-After of the ingress's 429/503 answers (backlog full, Redis down).",
    )
    max_body: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576, description="Largest update body accepted."
    )

    @property
    def enabled(self) -> bool:
        return self.public_url is not None

    @field_validator("allowed_updates", mode="before")
    @classmethod
    def _split_types(cls, value: Any) -> Any:
        """An environment variable is one string: a JSON list or comma-separated names."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text.replace("'", '"'))
            except json.JSONDecodeError:
                raise ValueError("expected a JSON list of update type names") from None
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("allowed_updates")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not v.replace("_", "").isalpha() or not v.islower()]
        if bad:
            raise ValueError(f"not update type names: {bad} (e.g. message, callback_query)")
        return value

    @field_validator("certificate")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value}: no such file (a PEM public key certificate)")
        return value


class ChatsSection(Section):
    flush_interval_s: float = Field(
        2.0,
        gt=0,
        le=300,
        description="How often a worker writes the chats it saw (the `chats` table, the "
        "audience of broadcasts): one batched statement per interval, never one per update.",
    )
    pending_max: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="Chats a worker keeps waiting for that write (while PostgreSQL is away "
        "they are kept and retried); past it new chats are skipped until the next write and "
        "recorded at their next message.",
    )


class BroadcastsSection(Section):
    concurrency: int = Field(
        8,
        ge=1,
        le=256,
        description="sendMessage requests of one broadcast in flight at once (enough to "
        "reach the bot's rate over a slow link; the limiter sets the rate).",
    )
    batch_max: int = Field(
        30,
        ge=1,
        le=1000,
        description="Chats claimed per PostgreSQL round trip. After a worker is killed, "
        "at most this many chats per broadcast are in doubt (`unknown`): they are never "
        "sent twice, so they may have missed it.",
    )
    lease_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A broadcast whose worker died is resumed by the bot's next owner "
        "once this long has passed since the dead worker's last batch.",
    )
    scan_interval_s: float = Field(
        1.0,
        gt=0,
        le=300,
        description="How often a worker looks for broadcasts of its bots to start.",
    )
