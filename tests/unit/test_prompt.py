"""Prompts that fit the model's window (bots/handlers/prompt.py): pure functions."""

from __future__ import annotations

from bots.handlers.prompt import (
    estimate_tokens,
    fit_prompt,
    prompt_budget,
    speaker_turn,
)
from context import Message


def turns(n: int, size: int) -> list[Message]:
    return [Message("user" if i % 2 == 0 else "assistant", f"{i}:" + "x" * size) for i in range(n)]


def test_the_estimate_is_conservative_for_dense_scripts() -> None:
    assert estimate_tokens("你好世界") >= 4  # CJK: about a token per character
    assert estimate_tokens("hello world, how are you?") >= 25 // 4


def test_the_oldest_turns_are_dropped_first_and_the_newest_always_kept() -> None:
    history = turns(50, 300)
    prompt = fit_prompt("sys", history, 1000, 1000)
    assert prompt[0] == {"role": "system", "content": "sys"}
    kept = [m["content"] for m in prompt[1:]]
    assert kept == [m.content for m in history[-len(kept) :]]  # a suffix, in order
    assert 1 < len(kept) < 50
    assert sum(estimate_tokens(m["content"]) for m in prompt) <= 1000


def test_a_newest_turn_longer_than_the_window_is_cut_to_fit_from_its_start() -> None:
    huge = Message("user", "a" * 100_000 + "THE QUESTION")
    prompt = fit_prompt("sys", [*turns(4, 10), huge], 500, 20)
    assert len(prompt) == 2 and prompt[1]["content"].endswith("THE QUESTION")
    assert sum(estimate_tokens(m["content"]) for m in prompt) <= 500


def test_the_reply_keeps_room_in_the_window() -> None:
    assert prompt_budget(128_000, None) == 128_000 - 4096
    assert prompt_budget(1000, None) == 750
    assert prompt_budget(1000, 900) == 250  # the prompt keeps a quarter at least
    assert prompt_budget(8000, 1000) == 7000


def test_group_turns_carry_the_speakers_name_private_ones_do_not() -> None:
    group = {"chat": {"type": "supergroup"}, "from": {"first_name": "Ann", "last_name": "Lee"}}
    assert speaker_turn("hi", group) == "Ann Lee: hi"
    anon = {"chat": {"type": "group"}, "from": {"id": 5, "username": "ann"}}
    assert speaker_turn("hi", anon) == "@ann: hi"
    private = {"chat": {"type": "private"}, "from": {"first_name": "Ann"}}
    assert speaker_turn("hi", private) == "hi"
