"""Split a reply into messages Telegram accepts (at most 4,096 UTF-16 code units each)."""

from __future__ import annotations

from typing import Final

#: Telegram's limit on one message's text, counted in UTF-16 code units.
TELEGRAM_MAX_TEXT: Final = 4096
_SEPARATORS: Final = ("\n\n", "\n", ". ", " ")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str, limit: int) -> int:
    """The longest prefix of `text` (in code points) that is at most `limit` UTF-16 units."""
    if len(text) <= limit and utf16_len(text) <= limit:
        return len(text)
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def split_message(text: str, limit: int = TELEGRAM_MAX_TEXT) -> list[str]:
    """Pieces of at most `limit` units, cut after a paragraph, line, sentence or word
    when one lies in the second half of the piece, else hard at the limit."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        cut = _fit(rest, limit)
        if cut < len(rest):
            window = rest[:cut]
            for sep in _SEPARATORS:
                at = window.rfind(sep)
                if at >= cut // 2:
                    cut = at + len(sep)
                    break
        piece = rest[:cut].rstrip()
        if piece:
            pieces.append(piece)
        rest = rest[cut:].lstrip()
    return pieces
