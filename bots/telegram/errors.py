"""The Bot API's errors: Telegram's ok=false answers mapped once into domain errors
(`telegram_error`), and network failures named without the URL, which holds the token
(`BotNetworkError`, `network_cause`). Raised by `BotApi` (bots/telegram/api.py).
"""

from __future__ import annotations

from typing import Any, Final

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

from bots.telegram.net import NetOptions, ProxyFailed


class TelegramError(Exception):
    """Telegram answered ok=false. `description` is Telegram's text (it holds no token)."""

    def __init__(self, bot_id: int, method: str, code: int, description: str) -> None:
        super().__init__(f"bot {bot_id}: {method} failed: {code} {description}")
        self.bot_id = bot_id
        self.method = method
        self.code = code
        self.description = description


class TokenRejected(TelegramError):
    """401 (or 404 on a malformed token): the token is dead; do not retry it."""


class Conflict(TelegramError):
    """409: another getUpdates or a webhook holds this bot."""


class RetryAfter(TelegramError):
    """429: flood control; the request may be repeated after `retry_after` seconds."""

    def __init__(self, bot_id: int, method: str, description: str, retry_after: float) -> None:
        super().__init__(bot_id, method, 429, description)
        self.retry_after = retry_after


class ServerError(TelegramError):
    """5xx from the Bot API: transient."""


class BotNetworkError(Exception):
    """The request did not get an answer. Carries no URL, so no token."""

    def __init__(self, bot_id: int, method: str, cause: str) -> None:
        super().__init__(f"bot {bot_id}: {method}: network error ({cause})")
        self.bot_id = bot_id
        self.method = method
        self.cause = cause


#: Network failures that prove the request never reached Telegram (safe to send again).
NOT_SENT: Final = frozenset(
    {"ClientConnectorError", "ClientConnectorDNSError", "ConnectFailed"}  # aiohttp's, the pool's
)

#: Errors worth retrying the same request for.
TRANSIENT: Final = (BotNetworkError, ServerError, RetryAfter)


def telegram_error(bot_id: int, method: str, status: int, payload: Any) -> TelegramError:
    """The domain error for an answer that is not ok: `payload` is its decoded body."""
    if not isinstance(payload, dict):
        return ServerError(bot_id, method, status, f"unexpected answer (HTTP {status})")
    code = payload.get("error_code", status)
    code = code if isinstance(code, int) else status
    description = str(payload.get("description", ""))[:500]
    params = payload.get("parameters")
    if code == 429:
        retry = params.get("retry_after", 1) if isinstance(params, dict) else 1
        try:
            seconds = max(float(retry), 0.0)
        except (TypeError, ValueError):
            seconds = 1.0
        return RetryAfter(bot_id, method, description, seconds)
    if code == 401 or (code == 404 and method == "getMe"):
        return TokenRejected(bot_id, method, code, description or "Unauthorized")
    if code == 409:
        return Conflict(bot_id, method, code, description)
    if code >= 500:
        return ServerError(bot_id, method, code, description)
    return TelegramError(bot_id, method, code, description)


_PROXY_ERRORS: Final = (ProxyError, ProxyConnectionError, ProxyTimeoutError)


def network_cause(exc: BaseException, net: NetOptions) -> str:
    """What went wrong, without a URL: the error's type, or for a proxy failure its reason
    naming the proxy with its password masked."""
    if isinstance(exc, ProxyFailed):
        return str(exc)
    if net.proxy is not None and isinstance(exc, (*_PROXY_ERRORS, EOFError)):
        # from aiohttp-socks on the shared pool; python-socks' messages hold no credentials
        reason = str(exc)[:200] if isinstance(exc, _PROXY_ERRORS) else ""
        reason = reason or "Connection closed unexpectedly"
        hint = " (check its user name and password)" if net.proxy.username else ""
        return f"proxy {net.proxy.shown} refused: {reason}{hint if 'closed' in reason else ''}"
    return type(exc).__name__
