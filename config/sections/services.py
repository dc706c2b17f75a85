"""Settings of the outside services: Redis, PostgreSQL, the Telegram Bot API and an
OpenAI-compatible LLM. Secrets are SecretStr so they never print."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from config.proxy import parse_proxy
from config.sections.base import Section

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class RedisSection(Section):
    url: str | None = Field(
        None,
        description="redis:// or unix:// URL. Unset: a private Redis is started in state.dir.",
    )
    prefix: str = Field(
        "botvisor:", min_length=1, description="Prefix of every key and channel we use."
    )
    timeout_s: float = Field(5.0, gt=0, le=120, description="Timeout of one Redis command.")
    pool_max: int = Field(
        32,
        ge=2,
        le=10_000,
        description="Connections per process. A busy pool makes a command wait (up to "
        "timeout_s) for a free connection; it never fails for being busy.",
    )

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(REDIS_SCHEMES):
            raise ValueError(
                f"{value!r} has no scheme; write redis://{value.split('://')[-1]} "
                "(or rediss:// for TLS, unix:///path/redis.sock)"
            )
        return value


class DatabaseSection(Section):
    url: SecretStr | None = Field(
        None,
        description="postgresql:// DSN. Unset: a private PostgreSQL is started in state.dir.",
    )
    pool_max: int = Field(4, ge=1, le=100, description="Connections per process.")

    @field_validator("url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(POSTGRES_SCHEMES):
            raise ValueError("must start with postgresql:// (e.g. postgresql://user@host/db)")
        return value

    timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout of one SQL command.")


class TelegramSection(Section):
    api_base: str = Field(
        "https://api.telegram.org",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Bot API server base URL (the emulator's URL in tests and demo).",
    )
    poll_timeout_s: int = Field(
        25, ge=0, le=50, description="getUpdates long-poll timeout; Telegram caps it at 50."
    )
    request_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Timeout of one Bot API call other than getUpdates."
    )
    max_retries: int = Field(
        3, ge=0, le=20, description="Retries of one call after a 429 or a network error."
    )
    send_deadline_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="A send keeps retrying 429s, 5xx and network errors (a Telegram outage) "
        "for this long, past max_retries, before its update is given up.",
    )
    connections_per_worker: int = Field(
        128,
        ge=0,
        le=1_000_000,
        description="Keep-alive HTTP connections per worker for sends and other calls (long "
        "polls have a lean connection of their own per bot). Bounded so a burst reuses "
        "connections instead of opening one per message; 0 = unbounded.",
    )
    proxy: SecretStr | None = Field(
        None,
        description="Proxy for every Bot API call and long poll: http://, https:// or "
        "socks5://, with optional user:password@ (a bot's settings may name its own, "
        '{"telegram": {"proxy": "..."}}). The password never appears in logs or errors.',
    )
    tls_verify: bool = Field(
        True,
        description="Check the Bot API server's TLS certificate (and an https:// proxy's). "
        "Turn off only for a test server.",
    )
    tls_ca_file: Path | None = Field(
        None,
        description="PEM bundle of CAs to trust instead of the system's (a local Bot API "
        "server or a TLS-intercepting proxy with a private CA).",
    )
    connect_timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="Timeout of one TCP connect attempt to one address of the Bot API "
        "server (or the proxy): a dead route fails over to the next address.",
    )
    happy_eyeballs_delay_s: float = Field(
        0.25,
        ge=0,
        le=30,
        description="Happy Eyeballs (RFC 8305): the next address (alternating IPv6/IPv4) "
        "is tried this long after the previous attempt started, if it has not connected.",
    )
    dns_ttl_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="Seconds a resolved Bot API address is reused by the long polls and "
        "the shared pool (one lookup per process, not one per bot); 0 = look up each time.",
    )

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_proxy(value.get_secret_value())  # ValueError names what is wrong
        return value

    @field_validator("tls_ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file (a PEM bundle of CA certificates)")
        return value


class OpenAISection(Section):
    base_url: str | None = Field(None, description="OpenAI-compatible API base URL.")
    api_key: SecretStr | None = Field(None, description="API key for base_url.")
    model: str = Field("gpt-4o-mini", min_length=1, description="Default model.")
    timeout_s: float = Field(30.0, gt=0, le=600, description="Timeout of one completion.")
    context_window_tokens: int = Field(
        128_000,
        ge=256,
        le=10_000_000,
        description="The model's context window in tokens: prompts keep the newest "
        "history that fits it (minus room for the reply), dropping the oldest turns. "
        "A bot's `context_window_tokens` setting overrides it.",
    )
