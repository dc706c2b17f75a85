"""Commands and the inline-keyboard menu (callback queries)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from examples.support_bot.settings import SupportSettings

router = Router(name="support_menu")

MENU = InlineKeyboardMarkup(
    inline_keyboard=[
        [
            InlineKeyboardButton(text="❓ Help", callback_data="menu:help"),
            InlineKeyboardButton(text="ℹ️ About", callback_data="menu:about"),
        ],
        [InlineKeyboardButton(text="📝 Contact form", callback_data="menu:form")],
    ]
)
HELP = "/start shows the menu, /form asks you three questions for our team, /cancel stops the form."


def settings_of(bot_settings: Mapping[str, Any]) -> SupportSettings:
    return SupportSettings.model_validate(dict(bot_settings))


@router.message(CommandStart())
async def start(message: Message, bot_settings: Mapping[str, Any]) -> None:
    await message.answer(settings_of(bot_settings).greeting, reply_markup=MENU)


@router.message(Command("help"))
async def help_command(message: Message) -> None:
    await message.answer(HELP)


@router.message(Command("crash"))
async def crash(message: Message) -> None:
    """Shows the error handler at work."""
    raise RuntimeError("the crash command crashes on purpose")


@router.callback_query(F.data == "menu:help")
async def menu_help(query: CallbackQuery) -> None:
    if query.message is not None:
        await query.bot.edit_message_text(  # type: ignore[union-attr]
            HELP, chat_id=query.message.chat.id, message_id=query.message.message_id
        )
    await query.answer()


@router.callback_query(F.data == "menu:about")
async def menu_about(query: CallbackQuery, bot_username: str) -> None:
    await query.answer(f"@{bot_username}, an aiogram Router running on botvisor", show_alert=True)
