"""The LLM seam: breaker (pure, injected now), reply splitting, handler settings, and the
real openai client against the local OpenAI-compatible server (never a mock)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.handlers.llm_settings import parse_settings
from bots.handlers.textsplit import TELEGRAM_MAX_TEXT, split_message, utf16_len
from bots.llm.breaker import BreakerConfig, BreakerState, CircuitBreaker
from bots.llm.client import LLMClient, LLMUnavailable
from emulators.openai import RunningLLMEmulator, answer, open_llm_emulator


@pytest.fixture
async def llm_emu() -> AsyncIterator[RunningLLMEmulator]:
    async with open_llm_emulator() as emu:
        yield emu


# -- breaker -----------------------------------------------------------------------------


def test_breaker_opens_after_n_consecutive_failures_only() -> None:
    b = CircuitBreaker(BreakerConfig(failure_threshold=3, cooldown_s=10))
    b.record_failure(0)
    b.record_failure(1)
    b.record_success(2)  # not consecutive any more
    b.record_failure(3)
    b.record_failure(4)
    assert b.state is BreakerState.CLOSED and b.allow(4)
    b.record_failure(5)
    assert b.state is BreakerState.OPEN
    assert not b.allow(5) and not b.allow(14.9)
    assert b.retry_in(10) == pytest.approx(5)


def test_breaker_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown_s=10))
    b.record_failure(0)
    assert b.allow(10)  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow(10.1)  # only one probe at a time
    b.record_success(11)
    assert b.state is BreakerState.CLOSED and b.allow(11) and b.allow(11)


def test_breaker_failed_probe_reopens_for_another_cooldown() -> None:
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown_s=10))
    b.record_failure(0)
    assert b.allow(10)
    b.record_failure(10.5)
    assert b.state is BreakerState.OPEN and b.opened == 2
    assert not b.allow(20) and b.allow(20.5)


def test_breaker_abandoned_probe_frees_the_slot() -> None:
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown_s=1))
    b.record_failure(0)
    assert b.allow(2)
    b.abandon()
    assert b.allow(2)


def test_breaker_config_is_validated() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerConfig(failure_threshold=0)


# -- splitting ---------------------------------------------------------------------------


def test_long_reply_is_split_at_paragraphs_under_the_limit() -> None:
    para = ("word " * 300).strip()  # 1499 characters
    text = "\n\n".join([para] * 7)
    pieces = split_message(text)
    two = "\n\n".join([para] * 2)  # three would be 4501 characters
    assert pieces == [two, two, two, para]
    assert all(len(p) <= TELEGRAM_MAX_TEXT for p in pieces)


def test_split_counts_utf16_units_as_telegram_does() -> None:
    text = "😀" * 3000  # 6000 UTF-16 units, 3000 code points
    pieces = split_message(text)
    assert [utf16_len(p) for p in pieces] == [4096, 6000 - 4096]
    assert "".join(pieces) == text


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=3000), st.integers(8, 200))
def test_split_keeps_every_visible_character_and_respects_the_limit(text: str, limit: int) -> None:
    pieces = split_message(text, limit)
    assert all(0 < utf16_len(p) <= limit for p in pieces)
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())


# -- settings ----------------------------------------------------------------------------


def test_bad_bot_settings_fall_back_to_defaults_and_are_named() -> None:
    settings, problems = parse_settings(
        {"temperature": 7, "max_history_messages": "ten", "model": "m1", "handoff_keyword": "Human"}
    )
    assert settings.temperature is None and settings.max_history_messages == 20
    assert settings.model == "m1"
    assert settings.wants_handoff("I want a HUMAN please")
    assert any(p.startswith("temperature:") for p in problems)
    assert any(p.startswith("max_history_messages:") for p in problems)


# -- the emulator and the real client ----------------------------------------------------


def test_emulator_answer_depends_on_the_conversation() -> None:
    convo = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "my name is Ann"},
        {"role": "assistant", "content": "you said my name is Ann"},
        {"role": "user", "content": "who am I?"},
    ]
    assert answer(convo) == "you said who am I?; earlier you said my name is Ann"
    assert len(answer([{"role": "user", "content": "/long 5000"}])) == 5000


def client(emu: RunningLLMEmulator, **kw: object) -> LLMClient:
    args: dict[str, object] = {
        "base_url": emu.base_url,
        "api_key": "sk-test",
        "default_model": "emu-1",
        "attempt_timeout_s": 2.0,
        **kw,
    }
    return LLMClient(**args)  # type: ignore[arg-type]


async def test_client_counts_tokens_per_bot(llm_emu: RunningLLMEmulator) -> None:
    llm = client(llm_emu)
    try:
        done = await llm.complete(1, [{"role": "user", "content": "hello there"}])
        await llm.complete(2, [{"role": "user", "content": "x"}])
    finally:
        await llm.aclose()
    assert done.text == "you said hello there"
    stats = llm.statistics()
    assert done.prompt_tokens == 5 and done.completion_tokens == 4
    assert stats.tokens_by_bot[1] == 9 and stats.tokens_by_bot[2] > 0
    assert stats.succeeded == 2 and stats.breaker_state == "closed"


async def test_client_retry_honours_retry_after(llm_emu: RunningLLMEmulator) -> None:
    llm_emu.state.fail_next("429", count=1, retry_after=1.2)
    llm = client(llm_emu, max_retries=2)
    try:
        done = await llm.complete(1, [{"role": "user", "content": "hi"}])
    finally:
        await llm.aclose()
    first, second = llm_emu.state.requests
    assert (first.status, second.status) == (429, 200)
    # the openai client's own backoff would wait <= 0.5 s for a first retry
    assert second.at - first.at >= 1.2
    assert done.text == "you said hi"


async def test_a_retry_after_longer_than_the_deadline_falls_back_at_once(
    llm_emu: RunningLLMEmulator,
) -> None:
    llm_emu.state.fail_next("429", count=1, retry_after=30)
    llm = client(llm_emu, max_retries=2, deadline_s=25)
    started = time.monotonic()
    try:
        with pytest.raises(LLMUnavailable) as err:
            await llm.complete(1, [{"role": "user", "content": "hi"}])
    finally:
        await llm.aclose()
    assert err.value.reason == "rate_limited"
    assert time.monotonic() - started < 2  # not the 25 s deadline
    assert llm_emu.state.count() == 1


async def test_a_retry_after_that_fits_is_waited_and_5xx_are_retried(
    llm_emu: RunningLLMEmulator,
) -> None:
    llm_emu.state.fail_next("500", count=2)
    llm = client(llm_emu, max_retries=2, deadline_s=25)
    try:
        done = await llm.complete(1, [{"role": "user", "content": "hi"}])
    finally:
        await llm.aclose()
    assert done.text == "you said hi"
    assert [r.status for r in llm_emu.state.requests] == [500, 500, 200]


async def test_client_gives_up_on_a_hung_upstream_within_its_timeout(
    llm_emu: RunningLLMEmulator,
) -> None:
    llm_emu.state.fail_next("hang", count=-1)
    llm = client(llm_emu, attempt_timeout_s=0.3, max_retries=0)
    started = time.monotonic()
    try:
        with pytest.raises(LLMUnavailable) as err:
            await llm.complete(1, [{"role": "user", "content": "hi"}])
    finally:
        await llm.aclose()
    assert err.value.reason == "timeout"
    assert time.monotonic() - started < 2
    assert llm.statistics().failed == 1


async def test_client_breaker_refuses_without_calling_the_upstream(
    llm_emu: RunningLLMEmulator,
) -> None:
    now = [0.0]
    llm_emu.state.fail_next("500", count=-1)
    llm = client(
        llm_emu, max_retries=0, breaker=BreakerConfig(2, cooldown_s=30), clock=lambda: now[0]
    )
    try:
        for _ in range(2):
            with pytest.raises(LLMUnavailable, match="upstream_error"):
                await llm.complete(1, [{"role": "user", "content": "hi"}])
        with pytest.raises(LLMUnavailable, match="breaker_open"):
            await llm.complete(1, [{"role": "user", "content": "hi"}])
        assert llm_emu.state.count() == 2
        llm_emu.state.recover()
        now[0] = 31.0
        done = await llm.complete(1, [{"role": "user", "content": "back"}])
    finally:
        await llm.aclose()
    assert done.text == "you said back"
    stats = llm.statistics()
    assert (stats.refused, stats.breaker_state, stats.breaker_opened) == (1, "closed", 1)


async def test_a_rejected_request_does_not_count_against_the_upstream(
    llm_emu: RunningLLMEmulator,
) -> None:
    llm = client(llm_emu, max_retries=0, breaker=BreakerConfig(1, cooldown_s=30))
    try:
        with pytest.raises(LLMUnavailable, match="rejected"):
            # the emulator answers 400 to a malformed conversation
            await llm.complete(1, [{"role": "bogus", "content": "x"}])
    finally:
        await llm.aclose()
    assert llm.breaker.state is BreakerState.CLOSED
