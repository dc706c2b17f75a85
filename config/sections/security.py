"""Settings of who may do what: the encryption and admin keys, login lockouts, owners'
quotas and the audit log. Secrets are SecretStr so they never print."""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import Field, SecretStr, field_validator

from config.sections.base import Section

#: A shorter admin key could be guessed; refused at load (exit 78).
ADMIN_KEY_MIN_LEN: Final = 32


class SecuritySection(Section):
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


class QuotasSection(Section):
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


class AuditSection(Section):
    retention_days: int = Field(
        90,
        ge=0,
        le=36_500,
        description="Audit log rows older than this many days are deleted by the master "
        "(checked every hour); 0 keeps them forever.",
    )
