"""A bot's own settings (the JSON object stored with it): what is allowed, checked once.

Runs wherever a bot's settings are written or read: the admin API and the CLI check them
before anything is stored (supervisor/registry/bot_service.py), the registry checks every
row it reads, and workers build the bot's rate limits with `ratelimit_for`. One set of
rules, so a value the API accepts is one the worker runs. Imports nothing of ours but
the settings models (config.settings, config.sections) and config.proxy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import ValidationError

from config.proxy import ProxyUrl, parse_proxy
from config.sections.messaging import RateLimitSection
from config.sections.services import TelegramSection
from config.settings import Settings

#: Serialised size of one bot's settings.
MAX_BYTES: Final = 65_536
#: Objects and lists inside objects and lists.
MAX_DEPTH: Final = 16
#: Numbers beyond ±2^53 lose precision in JSON readers (and 1e20 fits no int64).
MAX_NUMBER: Final = 2**53
MAX_KEY_LEN: Final = 256


class BadBotSettings(ValueError):
    """A bot's settings are invalid; the message names the key and what is allowed."""


def check_bot_settings(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object within the limits, else BadBotSettings."""
    if not isinstance(value, dict):
        raise BadBotSettings("settings: expected a JSON object")
    _check(value, "settings", 0)
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        raise BadBotSettings("settings: not representable as JSON") from None
    if size > MAX_BYTES:
        raise BadBotSettings(f"settings: {size} bytes as JSON; at most {MAX_BYTES} are allowed")
    return value


def _check(value: Any, where: str, depth: int) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise BadBotSettings(f"{where}: strings may not hold a NUL character")
        return
    if isinstance(value, int | float):
        if not -MAX_NUMBER <= value <= MAX_NUMBER or value != value:
            raise BadBotSettings(f"{where}: numbers must be within ±2^53 ({MAX_NUMBER})")
        return
    if depth >= MAX_DEPTH:
        raise BadBotSettings(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_KEY_LEN or "\x00" in key:
                raise BadBotSettings(
                    f"{where}: keys are strings of at most {MAX_KEY_LEN} characters without NUL"
                )
            _check(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1)
    else:
        raise BadBotSettings(f"{where}: {type(value).__name__} is not a JSON value")


def ratelimit_for(settings: Settings, bot_settings: Mapping[str, Any]) -> RateLimitSection:
    """Deployment limits, overridden per bot by its settings' `ratelimit` object
    (e.g. {"ratelimit": {"per_bot": {"limit": 1000}}} for paid broadcasts), validated by
    the same model as the config file so the rules and messages are the config's."""
    own = bot_settings.get("ratelimit") if isinstance(bot_settings, Mapping) else None
    if own is None:
        return settings.ratelimit
    merged = settings.ratelimit.model_dump()
    try:
        for name, value in dict(own).items():
            merged[name] = (
                {**merged[name], **value} if isinstance(merged.get(name), dict) else value
            )
        return RateLimitSection.model_validate(merged)
    except (ValidationError, TypeError, ValueError) as exc:
        raise BadBotSettings(f"settings.ratelimit: {_first_error(exc)}") from None


@dataclass(frozen=True, slots=True)
class TelegramOverride:
    """Where one bot reaches the Bot API: its settings' `telegram` object over the config.

    `{"telegram": {"api_base": "http://127.0.0.1:8081", "proxy": "socks5://u:p@h:1080"}}`;
    `"proxy": null` (or "") turns a deployment-wide proxy off for this bot.
    """

    api_base: str
    proxy: ProxyUrl | None


_OVERRIDE_KEYS: Final = frozenset({"api_base", "proxy"})
_API_BASE: Final = re.compile(TelegramSection.model_fields["api_base"].metadata[0].pattern)


def telegram_for(settings: Settings, bot_settings: Mapping[str, Any]) -> TelegramOverride:
    """The bot's API base and proxy, checked with the config's rules (BadBotSettings)."""
    tg = settings.telegram
    deployment_proxy = parse_proxy(tg.proxy.get_secret_value()) if tg.proxy is not None else None
    own = bot_settings.get("telegram") if isinstance(bot_settings, Mapping) else None
    if own is None:
        return TelegramOverride(tg.api_base, deployment_proxy)
    if not isinstance(own, Mapping):
        raise BadBotSettings(
            'settings.telegram: expected an object like {"proxy": "socks5://host:1080"}'
        )
    unknown = set(own) - _OVERRIDE_KEYS
    if unknown:
        raise BadBotSettings(
            f"settings.telegram.{sorted(unknown)[0]}: unknown key; allowed: api_base, proxy"
        )
    api_base = own.get("api_base", tg.api_base)
    if not isinstance(api_base, str) or not _API_BASE.match(api_base):
        raise BadBotSettings(
            "settings.telegram.api_base: expected an http(s) URL like http://127.0.0.1:8081"
        )
    proxy = deployment_proxy
    if "proxy" in own:
        value = own["proxy"]
        if value is None or value == "":
            proxy = None
        elif not isinstance(value, str):
            raise BadBotSettings("settings.telegram.proxy: expected a URL string or null")
        else:
            try:
                proxy = parse_proxy(value)
            except ValueError as exc:
                raise BadBotSettings(f"settings.telegram.proxy: {exc}") from None
    return TelegramOverride(api_base.rstrip("/"), proxy)


def check_for(settings: Settings, bot_settings: Any) -> dict[str, Any]:
    """Every rule: the shape and limits above, then the `ratelimit` and `telegram` objects."""
    checked = check_bot_settings(bot_settings)
    ratelimit_for(settings, checked)
    telegram_for(settings, checked)
    return checked


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return 'expected an object like {"per_bot": {"limit": 30, "period_s": 1}}'


def shown(bot_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as the API and the CLI show them: a proxy's password masked."""
    out = dict(bot_settings)
    own = out.get("telegram")
    if isinstance(own, Mapping) and isinstance(own.get("proxy"), str):
        try:
            proxy = parse_proxy(own["proxy"])
        except ValueError:
            return out  # not valid, so not used: nothing to hide that works
        out["telegram"] = {**own, "proxy": proxy.shown}
    return out


def keep_hidden(new: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """`new` with a proxy written back as shown (password masked) restored from `current`,
    so a read-modify-write through the API keeps the password it never saw."""
    out = dict(new)
    own, old = out.get("telegram"), current.get("telegram")
    if (
        isinstance(own, Mapping)
        and isinstance(old, Mapping)
        and isinstance(old.get("proxy"), str)
        and own.get("proxy") == shown(current)["telegram"].get("proxy") != old["proxy"]
    ):
        out["telegram"] = {**own, "proxy": old["proxy"]}
    return out
