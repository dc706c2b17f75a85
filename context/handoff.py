"""Operator handoff: a chat handed to a human is marked in its dialog namespace.

While marked, bots record the chat's messages but do not answer them. The mark is
dialog state, so it also lapses after `context.dialog_ttl_s` of silence in the chat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import structlog

from context.model import Changes, Context, Message, now_ts

if TYPE_CHECKING:
    from context.store import ContextStore

log = structlog.get_logger(__name__)

HANDOFF_KEY: Final = "handoff"


def handed_off(ctx: Context) -> bool:
    return bool(ctx.dialog.get(HANDOFF_KEY))


def handoff_changes(reason: str, message: Message | None = None) -> Changes:
    """Changes that hand the chat to a human (and record the message that asked)."""
    mark: dict[str, Any] = {"since": now_ts(), "reason": reason}
    return Changes(append=(message,) if message is not None else (), dialog_set={HANDOFF_KEY: mark})


async def release_chat(store: ContextStore, bot_id: int, chat_id: int) -> bool:
    """Give the chat back to the bot. Returns whether it was handed off.

    A compare-and-set like every write, so it works from any process (the CLI, the
    admin API) while the bot's worker keeps writing the chat.
    A chat that is not handed off is left alone: nothing is written.
    """
    before = await store.load(bot_id, chat_id)
    if not handed_off(before):
        return False
    await store.save(bot_id, chat_id, Changes(dialog_clear=(HANDOFF_KEY,)))
    log.info("chat.released", bot_id=bot_id, chat_id=chat_id)
    return True
