"""The prompt of one completion: the system prompt and as much recent history as fits.

History is bounded by tokens, not only by message count: the model's context window
(`openai.context_window_tokens`, or the bot's `context_window_tokens`) minus room for
the reply, counted with a conservative estimate (no tokenizer download at run time):
one token per 3 UTF-8 bytes — English runs ~4 bytes a token, CJK ~3 — plus
`PER_MESSAGE_TOKENS` of framing per message. The oldest turns are dropped first; the
newest user turn is always sent, cut to fit when it alone is too long. So a chat whose
history outgrew the window still gets answers instead of a permanent fallback.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from context import Message

#: Role, separators and the reply's priming, per message (OpenAI documents 3-4).
PER_MESSAGE_TOKENS: Final = 4
#: Bytes per token in the estimate (real tokenizers average more; this overestimates).
BYTES_PER_TOKEN: Final = 3
#: Room kept for the reply when the bot sets no `max_tokens`: this share of the window.
REPLY_SHARE: Final = 4
#: The most a reply reserve takes when `max_tokens` is unset.
REPLY_RESERVE_MAX: Final = 4096

Prompt = list[dict[str, str]]


def estimate_tokens(text: str) -> int:
    return -(-len(text.encode()) // BYTES_PER_TOKEN) + PER_MESSAGE_TOKENS


def prompt_budget(window_tokens: int, max_tokens: int | None) -> int:
    """Tokens the prompt may take: the window minus the reply's room (at least a quarter
    of the window stays for the prompt)."""
    reserve = (
        max_tokens
        if max_tokens is not None
        else min(REPLY_RESERVE_MAX, window_tokens // REPLY_SHARE)
    )
    return max(window_tokens // REPLY_SHARE, window_tokens - reserve)


def fit_prompt(
    system_prompt: str, history: Iterable[Message], budget_tokens: int, max_messages: int
) -> Prompt:
    """System prompt, then the newest user/assistant messages that fit `budget_tokens`
    (at most `max_messages`), oldest first. The newest message is always included, cut
    from its start when it alone does not fit."""
    turns = [m for m in history if m.role in ("user", "assistant")][-max_messages:]
    left = budget_tokens - estimate_tokens(system_prompt)
    kept: list[dict[str, str]] = []
    for i, m in enumerate(reversed(turns)):
        cost = estimate_tokens(m.content)
        if cost > left:
            if i == 0:  # the turn being answered: keep its end (usually the question)
                room = max(0, left - PER_MESSAGE_TOKENS) * BYTES_PER_TOKEN
                text = m.content.encode()[-room:].decode(errors="ignore") if room else ""
                kept.append({"role": m.role, "content": text})
            break
        left -= cost
        kept.append({"role": m.role, "content": m.content})
    return [{"role": "system", "content": system_prompt}, *reversed(kept)]


def speaker_turn(text: str, message: dict[str, object] | None) -> str:
    """In a group the model must know who spoke: "Ann Lee: text"; a private chat's
    turns stay as typed."""
    if not message:
        return text
    chat = message.get("chat")
    if not isinstance(chat, dict) or chat.get("type") not in ("group", "supergroup"):
        return text
    sender = message.get("from")
    if not isinstance(sender, dict):
        return text
    name = " ".join(
        str(sender[k]) for k in ("first_name", "last_name") if isinstance(sender.get(k), str)
    ).strip()
    if not name:
        username = sender.get("username")
        name = f"@{username}" if isinstance(username, str) else f"user {sender.get('id', '?')}"
    return f"{name}: {text}"
