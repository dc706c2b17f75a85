"""The settings model: `Settings`, one field per section, validated as a whole.

The sections themselves (every key with its type, default and prose) live in
config/sections/. `--help`, docs and validation all come from those fields, as
gunicorn's `Setting` classes do. Secrets are SecretStr so they never print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr, model_validator

from config import redact
from config.sections.base import Section
from config.sections.messaging import (
    BroadcastsSection,
    ChatsSection,
    ContextSection,
    RateLimitSection,
    WebhookSection,
)
from config.sections.operations import DashboardSection, HttpSection, LogSection, MetricsSection
from config.sections.runtime import (
    BotsSection,
    HandlersSection,
    HostSection,
    LeasesSection,
    ShutdownSection,
    StateSection,
    WorkersSection,
)
from config.sections.security import AuditSection, QuotasSection, SecuritySection
from config.sections.services import DatabaseSection, OpenAISection, RedisSection, TelegramSection

ENV_PREFIX = "BOTVISOR_"
#: Environment variables with our prefix that are not settings keys.
#: (BOTVISOR_TEST_SERVICES: tests/conftest.py's switch, inherited by the CLI it runs)
ENV_NOT_SETTINGS = frozenset({"BOTVISOR_CONFIG", "BOTVISOR_WORKER_INDEX", "BOTVISOR_TEST_SERVICES"})


class Settings(Section):
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
