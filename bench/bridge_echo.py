"""The echo bot as an aiogram Router, for bench/aiogram_bridge_bench.py: the same answer
as botvisor's native `echo` handler (the text, as a reply to the message)."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message

router = Router(name="bridge_echo")


@router.message(F.text)
async def echo(message: Message) -> None:
    await message.reply(message.text or "")
