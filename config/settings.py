"""The settings model. Every key is declared once here with its type, default and prose.

`--help`, docs and validation all come from these fields, as gunicorn's `Setting`
classes do. Secrets are SecretStr so they never print.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from config import redact
from config.proxy import parse_proxy

ENV_PREFIX = "BOTVISOR_"
#: Environment variables with our prefix that are not settings keys.
#: (BOTVISOR_TEST_SERVICES: tests/conftest.py's switch, inherited by the CLI it runs)
ENV_NOT_SETTINGS = frozenset({"BOTVISOR_CONFIG", "BOTVISOR_WORKER_INDEX", "BOTVISOR_TEST_SERVICES"})
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: A shorter admin key could be guessed; refused at load (exit 78).
ADMIN_KEY_MIN_LEN: Final = 32


def default_state_dir(config_file: Path | None, environ: Mapping[str, str]) -> tuple[Path, str]:
    """Where state lives when `state.dir` is not set, and why (for the CLI's one line)."""
    if environ.get("STATE_DIRECTORY"):  # systemd: the first of StateDirectory=
        return Path(environ["STATE_DIRECTORY"].split(":")[0]), "$STATE_DIRECTORY (systemd)"
    if config_file is not None:
        return config_file.absolute().parent / ".botvisor", f"beside {config_file}"
    xdg = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")) / ".local/state")
    why = "$XDG_STATE_HOME" if environ.get("XDG_STATE_HOME") else "~/.local/state"
    return Path(xdg).expanduser() / "botvisor", f"{why}, no config file"


#: a worker's drain may run this far past shutdown.grace_s before it stops waiting
DRAIN_OVERRUN_S: Final = 3.0
#: what a worker may spend after its drain: its services' stop (≤ 3 s), the context
#: store's close (≤ 11 s when PostgreSQL is slow: replay 1 s, flush 5 s, tasks 5 s) and
#: its pools (≤ 1 s each); see supervisor/worker/process.py
WORKER_TEARDOWN_S: Final = 17.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Rate(_Section):
    """At most `limit` messages in any window of `period_s` seconds."""

    limit: int = Field(ge=1, le=100_000, description="Messages allowed per window.")
    period_s: float = Field(gt=0, le=3600, description="Window length in seconds.")


class RedisSection(_Section):
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


class DatabaseSection(_Section):
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


class TelegramSection(_Section):
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


class WorkersSection(_Section):
    count: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="Worker processes (default: number of CPUs).",
    )
    shards: int = Field(64, ge=1, le=65_536, description="Shards per deployment; fixed.")
    heartbeat_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often each worker writes its heartbeat."
    )
    heartbeat_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A worker silent this long is hung and is killed."
    )
    boot_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="A worker not ready this long after spawn is killed."
    )
    restart_max: int = Field(
        5, ge=1, le=1000, description="Restarts allowed within restart_within_s."
    )
    restart_within_s: float = Field(
        60.0, gt=0, le=86_400, description="Window of the restart intensity."
    )
    reconcile_interval_s: float = Field(
        5.0, gt=0, le=3600, description="Registry re-read period; bounds a lost hint's delay."
    )
    reconcile_full_interval_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="Safety full pass (compares every row, decrypts none it need not); "
        "the passes between read only rows changed since the last one.",
    )


class HttpSection(_Section):
    host: str = Field("127.0.0.1", description="Address of health, metrics and admin API.")
    port: int = Field(8080, ge=0, le=65_535, description="Port; 0 picks a free one.")
    idle_timeout_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description=(
            "A connection that sends no complete request head within this time (of "
            "connecting, or of its last response) is closed."
        ),
    )
    max_connections: int = Field(
        256, ge=1, le=65_536, description="Open connections at most; more are closed at once."
    )


class RateLimitSection(_Section):
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


class ContextSection(_Section):
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


class OpenAISection(_Section):
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


class SecuritySection(_Section):
    encryption_key: SecretStr | None = Field(
        None,
        description=(
            "Base64 of 32 bytes encrypting bot tokens at rest. "
            "Unset: a key file is created in state.dir."
        ),
    )
    previous_keys: list[SecretStr] = Field(
        default_factory=list,
        description=(
            "Earlier encryption keys (base64 of 32 bytes each), decrypt-only: keep them "
            "until `botvisor keys rotate` has re-encrypted every token under "
            "encryption_key. In the environment: comma-separated or a JSON list."
        ),
    )
    admin_key: SecretStr | None = Field(
        None,
        description=(
            f"Bearer key of the admin API, at least {ADMIN_KEY_MIN_LEN} characters "
            "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
        ),
    )

    login_free_failures: int = Field(
        10,
        ge=1,
        le=1000,
        description=(
            "Failed logins (admin API per client address, manager bot per Telegram user) "
            "before that source is locked out; each further failure doubles the lockout."
        ),
    )
    login_lockout_max_s: float = Field(
        900.0, gt=0, le=86_400, description="Longest lockout after failed logins."
    )

    @field_validator("admin_key")
    @classmethod
    def _long_admin_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < ADMIN_KEY_MIN_LEN:
            raise ValueError(
                f"too short: use at least {ADMIN_KEY_MIN_LEN} random characters, e.g. "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @field_validator("previous_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """An environment variable is one string: a JSON list or comma-separated keys."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("expected a JSON list of base64 keys") from None
        return [part.strip() for part in text.split(",") if part.strip()]


class QuotasSection(_Section):
    """Defaults for every owner; the admin overrides them per owner
    (`botvisor owners set-quota`, `PUT /v1/owners/{id}/quota`). 0 means unlimited."""

    bots: int = Field(0, ge=0, description="Bots an owner may register; 0 = unlimited.")
    messages_per_day: int = Field(
        0,
        ge=0,
        description="Updates an owner's bots handle per UTC day (the manager bot is not "
        "counted); past it they stay silent until midnight UTC. 0 = unlimited.",
    )
    llm_tokens_per_day: int = Field(
        0,
        ge=0,
        description="LLM tokens (prompt + completion) an owner's openai bots use per UTC "
        "day; past it they answer `fallback_text` without calling the model. 0 = unlimited.",
    )
    fallback_text: str = Field(
        "Sorry, this bot has used up its daily allowance. Please try again tomorrow.",
        min_length=1,
        max_length=4096,
        description="What an openai bot answers while its owner is over the LLM token quota.",
    )
    sync_interval_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How often the master copies the day's usage counters from Redis to "
        "PostgreSQL (and restores them in Redis after Redis lost them); read at start.",
    )


class AuditSection(_Section):
    retention_days: int = Field(
        90,
        ge=0,
        le=36_500,
        description="Audit log rows older than this many days are deleted by the master "
        "(checked every hour); 0 keeps them forever.",
    )


class LogSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: readable on a TTY, JSON otherwise."
    )


class ShutdownSection(_Section):
    grace_s: float = Field(
        10.0, gt=0, le=3600, description="SIGTERM: time in-flight handlers get to finish."
    )

    @property
    def drain_cutoff_s(self) -> float:
        """A worker gives up on its drain (and says what was left) this long after SIGTERM."""
        return self.grace_s + DRAIN_OVERRUN_S

    @property
    def kill_after_s(self) -> float:
        """The master SIGKILLs a draining worker only past its drain cutoff plus what the
        worker may spend after it (context store flushed to PostgreSQL, pools closed)."""
        return self.drain_cutoff_s + WORKER_TEARDOWN_S + 1.0


class BotsSection(_Section):
    inflight_max: int = Field(
        200, ge=1, le=100_000, description="Unfinished updates per bot before polling pauses."
    )
    queued_max_worker: int = Field(
        20_000,
        ge=1,
        le=10_000_000,
        description="Updates received and not yet handled across all bots of one worker; "
        "past it polls wait for room (Telegram keeps the updates), nothing is dropped.",
    )
    spawn_concurrency: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Bot handshakes (getMe, or opening the poll connection when the "
        "username is known) run at once when a worker boots.",
    )
    backoff_min_s: float = Field(0.5, gt=0, le=3600, description="First actor restart delay.")
    backoff_max_s: float = Field(30.0, gt=0, le=86_400, description="Longest restart delay.")
    inbox: bool = Field(
        True,
        description="Durable inbox: polled updates go to a per-shard Redis Stream and are "
        "confirmed to Telegram at once, handled from the stream (no head-of-line blocking "
        "behind a slow chat). Off: updates are confirmed only once handled.",
    )
    inbox_backlog_max: int = Field(
        50_000,
        ge=1,
        le=10_000_000,
        description="Unhandled inbox entries per shard before that shard's bots pause "
        "polling (Telegram keeps the updates), nothing is dropped.",
    )
    inbox_claim_idle_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Inbox entries pending this long (a dead or moved worker's) are claimed "
        "and handled by the shard's owner; longer than any handler runs.",
    )


class WebhookSection(_Section):
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


class ChatsSection(_Section):
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


class BroadcastsSection(_Section):
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


class MetricsSection(_Section):
    per_bot_labels: bool = Field(False, description="Label metrics by bot id (many series).")


class HandlersSection(_Section):
    paths: list[Path] = Field(
        default_factory=list,
        description="Directories added to the front of sys.path (in workers, the master "
        "and CLI runs) before a handler reference `package.module:attr` is imported, e.g. "
        '["/srv/bots"]. Relative paths are relative to the working directory. In the '
        "environment, separated like PYTHONPATH: BOTVISOR_HANDLERS__PATHS=/srv/bots:/opt/more.",
    )

    @field_validator("paths", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p]
        return value


#: a host id: letters, digits, dot, dash, underscore (a Kubernetes pod name fits)
HOST_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class HostSection(_Section):
    id: str = Field(
        default_factory=socket.gethostname,
        description="This host's id in the cluster (default: the hostname). Hosts sharing "
        "one PostgreSQL and Redis must have different ids; one master runs per id. "
        "1-63 of letters, digits, '.', '-', '_' (a Kubernetes pod name fits).",
    )

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not HOST_ID_RE.match(value):
            raise ValueError(
                "must be 1-63 letters, digits, '.', '-' or '_', starting with a letter or digit"
            )
        return value


class LeasesSection(_Section):
    ttl_s: float = Field(
        10.0,
        ge=1,
        le=600,
        description="Shard lease lifetime in PostgreSQL: a dead host's shards move to the "
        "others this long after its last renewal.",
    )
    renew_s: float = Field(
        1.0,
        gt=0,
        le=300,
        description="How often a host renews its leases (and rebalances). Must be below "
        "ttl_s - margin_s, so several renewals can fail before the host fences itself.",
    )
    margin_s: float = Field(
        3.0,
        gt=0,
        le=300,
        description="Safety margin: a host stops a shard's bots this long before the "
        "lease could expire by its own clock (covers clock rate drift and slow stops).",
    )

    @model_validator(mode="after")
    def _renew_before_fence(self) -> LeasesSection:
        if self.renew_s >= self.ttl_s - self.margin_s:
            raise ValueError(
                f"leases.renew_s ({self.renew_s:g}) must be below leases.ttl_s - "
                f"leases.margin_s ({self.ttl_s:g} - {self.margin_s:g})"
            )
        return self


class DashboardSection(_Section):
    enabled: bool = Field(
        True,
        description="Serve the owners' dashboard under /ui on the HTTP port (login with an "
        "owner's API key or security.admin_key); read at start. Workers then also send "
        "per-bot figures (at most 10,000 bots each) in a heartbeat every poll_interval_s.",
    )
    session_ttl_s: float = Field(
        8 * 3600.0,
        ge=60,
        le=30 * 86_400,
        description="A dashboard login lasts this long, then the browser must log in again. "
        "Sessions live in the master's memory: a master restart logs everyone out.",
    )
    max_sessions: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Dashboard sessions kept at most; past it the oldest is logged out.",
    )
    secure_cookies: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Mark the session cookie `Secure`: `auto` when the request came over "
        "TLS, `always` behind a TLS-terminating proxy (the usual production setup), "
        "`never` only for plain-HTTP tests.",
    )
    page_size: int = Field(50, ge=5, le=500, description="Bots per page of the bots list.")
    poll_interval_s: float = Field(
        5.0,
        ge=0.2,
        le=60,
        description="How often open pages fetch live figures (while the tab is visible), "
        "and how often workers send their per-bot figures to the master.",
    )


class StateSection(_Section):
    dir: Path = Field(
        default_factory=lambda: default_state_dir(None, os.environ)[0],
        description="State directory: embedded servers, key file, metrics files. Unset: "
        "$STATE_DIRECTORY (systemd's StateDirectory=, /var/lib/botvisor), else `.botvisor` "
        "beside the config file, else $XDG_STATE_HOME/botvisor (~/.local/state/botvisor). "
        "A relative path in the config file is relative to that file.",
    )


class Settings(_Section):
    """All of botvisor's configuration. Frozen: reload builds a new one."""

    redis: RedisSection = RedisSection()
    database: DatabaseSection = DatabaseSection()
    telegram: TelegramSection = TelegramSection()
    workers: WorkersSection = WorkersSection()
    http: HttpSection = HttpSection()
    ratelimit: RateLimitSection = RateLimitSection()
    context: ContextSection = ContextSection()
    openai: OpenAISection = OpenAISection()
    security: SecuritySection = SecuritySection()
    log: LogSection = LogSection()
    shutdown: ShutdownSection = ShutdownSection()
    bots: BotsSection = BotsSection()
    webhook: WebhookSection = WebhookSection()
    chats: ChatsSection = ChatsSection()
    broadcasts: BroadcastsSection = BroadcastsSection()
    metrics: MetricsSection = MetricsSection()
    handlers: HandlersSection = HandlersSection()
    dashboard: DashboardSection = DashboardSection()
    state: StateSection = StateSection()
    host: HostSection = HostSection()
    leases: LeasesSection = LeasesSection()
    quotas: QuotasSection = QuotasSection()
    audit: AuditSection = AuditSection()

    @model_validator(mode="after")
    def _shards_exceed_workers(self) -> Settings:
        if self.workers.shards < self.workers.count:
            raise ValueError(
                f"workers.shards ({self.workers.shards}) must be at least "
                f"workers.count ({self.workers.count})"
            )
        return self

    @model_validator(mode="after")
    def _remember_secrets(self) -> Settings:
        """Every secret of every Settings built in this process is masked in its logs."""
        redact.remember(_secret_values(self))
        return self

    def to_json_dict(self) -> dict[str, Any]:
        """Plain data with secrets revealed: only for handing to our own worker processes."""
        return _reveal(self.model_dump(mode="python"))


def _secret_values(settings: Settings) -> list[str]:
    """The secrets of these settings: SecretStr values and passwords of service URLs."""
    values = [v.get_secret_value() for v in _secrets(settings.model_dump(mode="python"))]
    for url in (settings.redis.url, *(u for u in values if "://" in u)):
        if url:
            password = urlsplit(url).password
            values.append(unquote(password) if password else "")
    return [v for v in values if v]


def _secrets(value: Any) -> list[SecretStr]:
    if isinstance(value, SecretStr):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _secrets(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _secrets(v)]
    return []


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
