"""Bodies of the master's HTTP API: validated requests and serialised responses.

The OpenAPI document (supervisor/http/openapi.py) is generated from these same models, and
every handler builds its JSON through them, so the document is what is served.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from config.bot_settings import MAX_BYTES, MAX_DEPTH, MAX_NUMBER, check_bot_settings
from supervisor.registry.bot_records import BotRecord, BotState

#: Telegram's tokens are `<id>:<35 chars>`; room to spare, never 9,000 characters.
TOKEN_MAX_LEN: Final = 100
#: a built-in or entry-point name, or an import path `package.module:attr`
HANDLER_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,200}$"
OWNER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"

BotSettings = Annotated[
    dict[str, Any],
    AfterValidator(check_bot_settings),
    Field(
        description=(
            f"Handler settings: a JSON object of at most {MAX_BYTES} bytes, nested at most "
            f"{MAX_DEPTH} levels, numbers within ±{MAX_NUMBER}, no NUL in strings; "
            "`ratelimit` overrides the deployment's rate limits for this bot."
        )
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- requests -------------------------------------------------------------------------------


class BotCreate(_Model):
    """Register a bot. Its token is checked with getMe first."""

    token: SecretStr = Field(
        max_length=TOKEN_MAX_LEN, description="The token BotFather gave, `<bot id>:<secret>`."
    )
    handler: str = Field("echo", pattern=HANDLER_PATTERN, description="What the bot does.")
    settings: BotSettings = Field(default_factory=dict)
    owner: str | None = Field(
        None,
        pattern=OWNER_PATTERN,
        description="Owner name (admin key only; an owner's key registers for itself).",
    )


class BotPatch(_Model):
    """Change a bot: each given field replaces the stored one; the revision goes up."""

    handler: str | None = Field(None, pattern=HANDLER_PATTERN, description="New handler.")
    settings: BotSettings | None = Field(None)
    mode: Literal["polling", "webhook"] | None = Field(
        None,
        description="How the bot receives updates: `polling` (getUpdates) or `webhook` "
        "(needs `webhook.public_url`); switched live without losing an update.",
    )


class BotTokenReplace(_Model):
    """A new token for a registered bot (after /revoke in @BotFather): same bot id."""

    token: SecretStr = Field(description="The new token, `<bot id>:<secret>`; checked with getMe.")


# -- responses ------------------------------------------------------------------------------


class Bot(_Model):
    id: int = Field(description="Telegram bot id, the number before ':' in its token.")
    owner_id: int | None = Field(description="Owner's id; null for bots of the admin.")
    username: str
    token: str = Field(description="Always masked: `<bot id>:***`.", pattern=r"^\d+:\*\*\*$")
    handler: str
    settings: dict[str, Any]
    state: BotState
    disabled_reason: str | None = Field(description="Why Telegram rejected it, when disabled.")
    revision: int = Field(description="Goes up on every change.")
    mode: Literal["polling", "webhook"] = Field(
        "polling", description="How the bot receives updates."
    )
    problem: str | None = Field(
        None, description="Set when the stored row could not be read whole (settings shown empty)."
    )

    @classmethod
    def of(cls, record: BotRecord) -> Bot:
        return cls.model_validate(record.public())


class BotList(_Model):
    bots: list[Bot]


class ErrorDetail(_Model):
    code: str = Field(description="Stable machine-readable code, e.g. `already_registered`.")
    message: str = Field(description="What was wrong and what to do.")
    quota: str | None = Field(
        None, description="With `quota_exceeded`: which quota (bots, messages_per_day, …)."
    )
    limit: int | None = Field(None, description="With `quota_exceeded`: the quota's limit.")
    used: int | None = Field(None, description="With `quota_exceeded`: how much is used.")


class Error(_Model):
    error: ErrorDetail


class Health(_Model):
    status: str


class Readiness(_Model):
    ready: bool
    reason: str


class WorkerStatus(_Model):
    index: int
    pid: int | None
    state: str = Field(description="down, starting, booting, ready or draining.")
    shards: list[int]
    bots_running: int
    bots_desired: int
    bots: dict[str, int] = Field(description="Actors by state.")
    loop_lag_ms: float | None
    heartbeat_age_s: float | None
    totals: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    health: dict[str, str | int] = Field(
        default_factory=dict,
        description="Degraded layers: redis and postgres (ok, recovering, degraded), pending writes.",
    )


class ChatRelease(_Model):
    bot_id: int
    chat_id: int
    released: bool = Field(description="False: the chat was not handed off; nothing changed.")


class HostStatus(_Model):
    """One host of the cluster, from its lease presence row (docs/MULTIHOST.md)."""

    host: str
    http: str = Field(description="Where its HTTP listener is.")
    pid: int
    seen_age_s: float = Field(description="Since its last lease renewal.")
    alive: bool
    leaving: bool
    ready: bool
    reason: str
    bots: dict[str, Any]
    shards: list[int] = Field(description="The shards it holds leases on.")


class Status(_Model):
    """Host-wide: no per-owner data, so it needs no key (like /metrics)."""

    host: str = Field(description="This host's `host.id`.")
    shards: list[int] | None = Field(description="Shards this host holds (null: all).")
    hosts: list[HostStatus] | None = Field(
        description="Every host of the cluster (null while PostgreSQL is unreachable)."
    )
    ready: bool
    reason: str
    uptime_s: float
    worker_restarts: int
    standby_pid: int | None = Field(
        None,
        description="The standby worker process (`workers.standby`), null while there is none.",
    )
    workers: list[WorkerStatus]
    bots_by_state: dict[str, int] | None
    registry_error: str | None


# -- owners, quotas and the audit log ------------------------------------------------------

#: a quota value: 0 = unlimited (JavaScript-safe integers)
QuotaValue = Annotated[int, Field(ge=0, le=MAX_NUMBER)]


class QuotaUpdate(_Model):
    """The admin's per-owner quota: each field null = the configured default, 0 = unlimited."""

    bots: QuotaValue | None = None
    messages_per_day: QuotaValue | None = None
    llm_tokens_per_day: QuotaValue | None = None


class Quota(_Model):
    """Limits in force (0 = unlimited)."""

    bots: int
    messages_per_day: int
    llm_tokens_per_day: int


class Usage(_Model):
    day: str = Field(description="The UTC day counted, YYYY-MM-DD (counts reset at midnight UTC).")
    bots: int
    messages: int = Field(description="Updates the owner's bots handled that day.")
    llm_tokens: int = Field(description="LLM tokens (prompt + completion) used that day.")


class Owner(_Model):
    id: int
    name: str
    created_at: str
    quota: Quota
    override: QuotaUpdate = Field(description="The admin's override (null: the default).")
    usage: Usage


class AuditEntry(_Model):
    id: int
    at: str = Field(description="When, ISO 8601 with time zone.")
    actor: str = Field(description="`admin` or `owner:<id>`; never a key.")
    owner_id: int | None = Field(description="Whose resource the action concerns.")
    action: str = Field(description="e.g. `bot.register`, `bot.pause`, `owner.set_quota`.")
    target: str = Field(description="e.g. `bot:123`, `owner:7`.")
    source: str = Field(description="`http:<ip>`, `cli` or `telegram:<user id>`.")
    outcome: str = Field(description="`ok`, or the refusal's error code.")
    detail: dict[str, Any]


class AuditPage(_Model):
    entries: list[AuditEntry] = Field(description="Newest first.")
    next_before: int | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )
