"""An incoming update as the hot path sees it: raw dict plus the few fields routing needs.

Building aiogram's pydantic `Update` costs more than the rest of an echo round trip,
so it is built lazily, only for handlers that ask for it (`as_aiogram()`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiogram.types import Update as AiogramUpdate

_MESSAGE_KINDS = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
)


class Incoming:
    __slots__ = ("_aiogram", "chat_id", "message", "raw", "received", "update_id")

    def __init__(self, raw: dict[str, Any], received: float = 0.0) -> None:
        self.raw = raw
        self.received = received  # perf_counter() when polled: latency is measured from here
        self.update_id: int = raw["update_id"]
        self.message: dict[str, Any] | None = None
        self._aiogram: AiogramUpdate | None = None
        chat_id = 0
        for kind in _MESSAGE_KINDS:
            msg = raw.get(kind)
            if isinstance(msg, dict):
                self.message = msg
                chat = msg.get("chat")
                if isinstance(chat, dict):
                    chat_id = int(chat.get("id", 0))
                break
        else:
            # callback queries and the like: order per user instead of per chat
            for value in raw.values():
                if isinstance(value, dict):
                    sender = value.get("from")
                    if isinstance(sender, dict):
                        chat_id = int(sender.get("id", 0))
                        break
        self.chat_id = chat_id

    @property
    def text(self) -> str | None:
        text = self.message.get("text") if self.message else None
        return text if isinstance(text, str) else None

    @property
    def message_id(self) -> int | None:
        mid = self.message.get("message_id") if self.message else None
        return mid if isinstance(mid, int) else None

    def as_aiogram(self) -> AiogramUpdate:
        """The same update as aiogram's typed model (built once, on first use)."""
        if self._aiogram is None:
            from aiogram.types import Update  # heavy import; keep it off worker start-up

            self._aiogram = Update.model_validate(self.raw)
        return self._aiogram
