"""The LLM upstream seam: the official `openai.AsyncOpenAI` client behind a circuit breaker.

One `LLMClient` per upstream per worker, shared by its bots. Retries are ours, not the
openai client's (it runs with `max_retries=0`): 408/409/429/5xx, timeouts and
connection errors are retried with jittered exponential backoff, or after the
`Retry-After` / `retry-after-ms` the upstream asks for — unless that wait does not fit
in what is left of the call's deadline: then the call fails at once (the user gets the
fallback now, not after the whole deadline). Each attempt has a timeout, the whole call
a deadline. The breaker counts calls that failed after those retries. Runs in the
worker's loop.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import structlog

from bots.llm.breaker import BreakerConfig, BreakerState, CircuitBreaker
from config.sections.services import OpenAISection

if TYPE_CHECKING:
    import openai

log = structlog.get_logger(__name__)

#: Answers that say "this request is wrong", not "the upstream is unwell".
_CLIENT_ERRORS: Final = frozenset({400, 404, 413, 422})
#: Statuses worth another attempt (as the openai client's own retries judge them).
_RETRY_STATUSES: Final = frozenset({408, 409, 429})
#: Backoff between attempts without a Retry-After: 0.5 s doubling, at most 8 s.
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 8.0


class LLMUnavailable(Exception):
    """No completion: `reason` is breaker_open, timeout, rate_limited, upstream_error,
    connection or rejected. The text carries no key and no prompt."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"LLM unavailable: {reason}{f' ({detail})' if detail else ''}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class LLMStatistics:
    requests: int
    succeeded: int
    failed: int
    refused: int  # not sent: the breaker was open
    breaker_state: str
    breaker_opened: int
    prompt_tokens: int
    completion_tokens: int
    tokens_by_bot: Mapping[int, int]


class LLMClient:
    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        default_model: str,
        attempt_timeout_s: float,
        max_retries: int = 2,
        deadline_s: float | None = None,
        breaker: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        context_window_tokens: int = 128_000,
    ) -> None:
        self.default_model = default_model
        #: the default model's context window (prompts are fitted to it)
        self.context_window_tokens = context_window_tokens
        self._options: dict[str, Any] = {
            "base_url": base_url,
            # local OpenAI-compatible servers take any key; the client insists on one
            "api_key": api_key or "unused",
            "timeout": attempt_timeout_s,
            "max_retries": 0,  # ours: a Retry-After is weighed against the deadline
        }
        self._max_retries = max_retries
        self._client: openai.AsyncOpenAI | None = None  # built by the first completion
        self._deadline_s = deadline_s or attempt_timeout_s * (max_retries + 1) + 10.0
        self.breaker = CircuitBreaker(breaker)
        self._clock = clock
        self._requests = self._succeeded = self._failed = self._refused = 0
        self._prompt_tokens = self._completion_tokens = 0
        self._tokens_by_bot: dict[int, int] = {}

    @classmethod
    def from_settings(cls, section: OpenAISection, **kwargs: Any) -> LLMClient:
        key = section.api_key.get_secret_value() if section.api_key is not None else None
        return cls(
            base_url=section.base_url,
            api_key=key,
            default_model=section.model,
            attempt_timeout_s=section.timeout_s,
            context_window_tokens=section.context_window_tokens,
            **kwargs,
        )

    async def warm(self) -> None:
        """Import openai in a thread: the import takes most of a second, which on the
        event loop at the first completion stalls every bot of the worker (and their
        Redis reads time out). The worker calls it before it starts an LLM bot."""
        if "openai" not in sys.modules:
            await asyncio.to_thread(importlib.import_module, "openai")

    async def complete(
        self,
        bot_id: int,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """One chat completion. Raises LLMUnavailable; never anything else from openai."""
        if not self.breaker.allow(self._clock()):
            self._refused += 1
            raise LLMUnavailable("breaker_open")
        self._requests += 1
        extra: dict[str, Any] = {}
        if temperature is not None:
            extra["temperature"] = temperature
        if max_tokens is not None:
            extra["max_tokens"] = max_tokens
        import openai  # here, not at module top: a worker of echo bots never pays for it
        from openai.types.chat import ChatCompletion

        if self._client is None:
            # the SDK's own aiohttp transport (`DefaultAioHttpClient`, same defaults as its
            # httpx one): the worker already runs aiohttp, and after an idle second a
            # request through httpx + anyio took ~1-2 ms longer to reach the model
            # (bench/llm_latency.py's uncontended phase)
            self._client = openai.AsyncOpenAI(
                **self._options, http_client=openai.DefaultAioHttpClient()
            )
        deadline = time.monotonic() + self._deadline_s
        attempt = 0
        while True:
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    # the client's own `post` (its documented way to any endpoint), not
                    # `chat.completions.create`: that one first walks every message of the
                    # prompt through its typing-driven params transform, 6 ms of CPU for
                    # a 20-turn prompt (bench/RESULTS.md); the request, the errors and
                    # the parsed `ChatCompletion` are the same
                    resp = await self._client.post(
                        "/chat/completions",
                        body={
                            "model": model or self.default_model,
                            "messages": [dict(m) for m in messages],
                            **extra,
                        },
                        cast_to=ChatCompletion,
                    )
                break
            except asyncio.CancelledError:
                self.breaker.abandon()
                raise
            except TimeoutError as exc:
                raise self._failure(bot_id, exc) from None
            except openai.APIError as exc:
                wait = _retry_wait(exc, attempt) if attempt < self._max_retries else None
                if wait is None:
                    raise self._failure(bot_id, exc) from None
                if wait >= deadline - time.monotonic():
                    log.info("llm.retry_after_past_deadline", bot_id=bot_id, wait_s=wait)
                    raise self._failure(bot_id, exc) from None
            attempt += 1
            await asyncio.sleep(wait)  # the backoff itself, not synchronisation
        self.breaker.record_success(self._clock())
        self._succeeded += 1
        text = resp.choices[0].message.content if resp.choices else None
        usage = resp.usage
        done = Completion(
            text or "",
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
        )
        self._count_tokens(bot_id, done)
        return done

    def _failure(self, bot_id: int, exc: BaseException) -> LLMUnavailable:
        self._failed += 1
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and status in _CLIENT_ERRORS:
            # the upstream answered: it is healthy, this request is not
            self.breaker.record_success(self._clock())
            reason = "rejected"
        else:
            self.breaker.record_failure(self._clock())
            reason = _reason(exc)
        log.warning(
            "llm.failed",
            bot_id=bot_id,
            reason=reason,
            status=status,
            error=type(exc).__name__,
            breaker=str(self.breaker.state),
        )
        return LLMUnavailable(reason, type(exc).__name__)

    def _count_tokens(self, bot_id: int, done: Completion) -> None:
        self._prompt_tokens += done.prompt_tokens
        self._completion_tokens += done.completion_tokens
        total = done.prompt_tokens + done.completion_tokens
        self._tokens_by_bot[bot_id] = self._tokens_by_bot.get(bot_id, 0) + total

    def statistics(self) -> LLMStatistics:
        return LLMStatistics(
            requests=self._requests,
            succeeded=self._succeeded,
            failed=self._failed,
            refused=self._refused,
            breaker_state=str(self.breaker.state),
            breaker_opened=self.breaker.opened,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
            tokens_by_bot=MappingProxyType(dict(self._tokens_by_bot)),
        )

    @property
    def breaker_state(self) -> BreakerState:
        return self.breaker.state

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _loop_time(deadline_monotonic: float) -> float:
    """A time.monotonic() deadline on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline_monotonic - time.monotonic())


def _retry_wait(exc: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retrying after `exc`, or None when it is not worth a retry."""
    import openai  # already loaded: only a completion fails

    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        return _backoff(attempt)
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    should = headers.get("x-should-retry")
    if should == "false" or (
        should != "true" and exc.status_code not in _RETRY_STATUSES and exc.status_code < 500
    ):
        return None
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            asked = float(value) / divisor
        except ValueError:
            continue
        if asked >= 0:
            return asked
    return _backoff(attempt)


def _backoff(attempt: int) -> float:
    jitter = 1 - 0.25 * random.random()  # noqa: S311 - spreading retries, not a secret
    return min(BACKOFF_FIRST_S * 2.0**attempt, BACKOFF_MAX_S) * jitter


def _reason(exc: BaseException) -> str:
    import openai  # already loaded: only a completion fails

    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    return "upstream_error"
