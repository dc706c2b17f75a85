"""The contact form: three questions, one FSM state each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from examples.support_bot.settings import SupportSettings

router = Router(name="support_form")


class Form(StatesGroup):
    name = State()
    email = State()
    issue = State()


ASK_NAME = "What is your name?"


@router.message(Command("cancel"), StateFilter("*"))
async def cancel(message: Message, state: FSMContext) -> None:
    if await state.get_state() is None:
        await message.answer("Nothing to cancel.")
        return
    await state.clear()
    await message.answer("Form cancelled.")


@router.message(Command("form"))
async def form_command(message: Message, state: FSMContext) -> None:
    await state.set_state(Form.name)
    await message.answer(ASK_NAME)


@router.callback_query(F.data == "menu:form")
async def form_button(query: CallbackQuery, state: FSMContext) -> None:
    await state.set_state(Form.name)
    await query.answer()
    if query.message is not None:
        await query.bot.send_message(query.message.chat.id, ASK_NAME)  # type: ignore[union-attr]


@router.message(Form.name, F.text)
async def got_name(message: Message, state: FSMContext) -> None:
    await state.update_data(name=message.text)
    await state.set_state(Form.email)
    await message.answer("Your e-mail address?")


@router.message(Form.email, F.text.contains("@"))
async def got_email(message: Message, state: FSMContext) -> None:
    await state.update_data(email=message.text)
    await state.set_state(Form.issue)
    await message.answer("What is the problem?")


@router.message(Form.email)
async def bad_email(message: Message) -> None:
    await message.answer("That does not look like an e-mail address; try again.")


@router.message(Form.issue, F.text)
async def got_issue(message: Message, state: FSMContext, bot_settings: Mapping[str, Any]) -> None:
    data = await state.update_data(issue=message.text)
    await state.clear()
    team = SupportSettings.model_validate(dict(bot_settings)).team
    await message.answer(
        f"Thanks, {data['name']}! {team} will write to {data['email']} about: {data['issue']}"
    )
