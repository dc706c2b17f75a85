"""The bridge's fast paths (bots/bridge/fastpath.py, params.py) leave what aiogram's own
code leaves: the same request parameters, the same objects bound to the same bot, and
the same run of filters, middlewares, handlers and error handlers."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiogram import BaseMiddleware, Bot, Dispatcher, F, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ChatAction, ParseMode
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.methods import (
    AnswerCallbackQuery,
    BanChatMember,
    EditMessageText,
    SendChatAction,
    SendMediaGroup,
    SendMessage,
    SendPhoto,
    SetMessageReaction,
    SetMyCommands,
    TelegramMethod,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeChat,
    CallbackQuery,
    ErrorEvent,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    LinkPreviewOptions,
    Message,
    MessageEntity,
    ReactionTypeEmoji,
    ReplyKeyboardRemove,
    TelegramObject,
    Update,
    URLInputFile,
)
from pydantic import PrivateAttr

from bots.bridge import fastpath
from bots.bridge.params import NotPlain, request_params
from bots.bridge.session import BridgeSession

USER = {"id": 7, "is_bot": False, "first_name": "Ann", "language_code": "en"}
CHAT = {"id": 7, "type": "private", "first_name": "Ann"}
BOT_USER = {"id": 42, "is_bot": True, "first_name": "Bot", "username": "b_bot"}


def _message(mid: int, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "message_id": mid,
        "date": 1_700_000_000,
        "chat": CHAT,
        "from": USER,
        "text": text,
    } | extra


UPDATES: list[dict[str, Any]] = [
    {"update_id": 1, "message": _message(1, "/start")},
    {"update_id": 2, "message": _message(2, "/form")},
    {"update_id": 3, "message": _message(3, "Ann")},  # FSM: answered in state Form.name
    {"update_id": 4, "message": _message(4, "/boom")},  # error handler
    {
        "update_id": 5,
        "message": _message(
            5,
            "bold reply",
            entities=[{"type": "bold", "offset": 0, "length": 4}],
            reply_to_message=_message(1, "/start"),
        ),
    },
    {
        "update_id": 6,
        "callback_query": {
            "id": "cq1",
            "from": USER,
            "chat_instance": "ci",
            "data": "menu:help",
            "message": _message(9, "menu", **{"from": BOT_USER}),
        },
    },
    {"update_id": 7, "edited_message": _message(3, "edited", edit_date=1_700_000_100)},
]


@pytest.fixture
def stock() -> Iterator[None]:
    fastpath.uninstall()
    yield
    fastpath.install()


class _Api:
    """LimitedApi's surface: records each request, answers like Telegram would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], int | None]] = []

    def same(self, other: Any) -> bool:
        return other is self

    async def send(self, method: str, params: dict[str, Any], chat_id: int | None) -> Any:
        self.sent.append((method, params, chat_id))
        if method.startswith(("send", "edit")):
            return _message(100 + len(self.sent), str(params.get("text")), **{"from": BOT_USER})
        return True


class _Recorder(BaseMiddleware):
    def __init__(self, seen: list[Any], name: str) -> None:
        self.seen = seen
        self.name = name

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        self.seen.append((self.name, type(event).__name__, sorted(data), _chain(handler)))
        return await handler(event, data)


def _chain(handler: Any) -> list[str]:
    """What a middleware can see of the next step: partials down to aiogram's wrapper."""
    out = []
    while hasattr(handler, "func"):
        out.append(type(handler).__name__)
        handler = handler.func
    out.append(getattr(handler, "__name__", type(handler).__name__))
    out.append(getattr(getattr(handler, "__wrapped__", None), "__name__", "-"))
    return out


class Form(StatesGroup):
    name = State()


def _dispatcher(seen: list[Any]) -> Dispatcher:
    router = Router(name="fast")
    router.message.outer_middleware(_Recorder(seen, "outer"))
    router.message.middleware(_Recorder(seen, "inner"))

    @router.message(Command("start"))
    async def start(message: Message) -> None:
        sent = await message.answer(
            "menu",
            reply_markup=InlineKeyboardMarkup(
                inline_keyboard=[[InlineKeyboardButton(text="Help", callback_data="menu:help")]]
            ),
        )
        assert sent.from_user is not None
        seen.append(
            (
                "start",
                type(sent).__name__,
                sent.bot is message.bot,
                sent.from_user.bot is message.bot,
            )
        )

    @router.message(Command("form"))
    async def form(message: Message, state: FSMContext) -> None:
        await state.set_state(Form.name)
        await message.reply("name?", parse_mode=ParseMode.HTML)

    @router.message(Form.name, F.text)
    async def name(message: Message, state: FSMContext) -> None:
        await state.clear()
        await message.bot.send_chat_action(message.chat.id, ChatAction.TYPING)  # type: ignore[union-attr]
        await message.answer(
            f"hi {message.text}", link_preview_options=LinkPreviewOptions(is_disabled=True)
        )

    @router.message(Command("boom"))
    async def boom(message: Message) -> None:
        raise ValueError("boom")

    @router.message(F.entities)
    async def entities(message: Message) -> None:
        assert message.reply_to_message is not None
        seen.append(("entities", message.reply_to_message.bot is message.bot))
        await message.reply(message.text or "", entities=message.entities)

    @router.callback_query(F.data == "menu:help")
    async def help_(query: CallbackQuery) -> None:
        seen.append(("callback", query.message.bot is query.bot))  # type: ignore[union-attr]
        await query.answer("help", show_alert=True)

    @router.edited_message()
    async def edited(message: Message) -> None:
        assert message.bot is not None
        await message.bot.edit_message_text(
            "seen", chat_id=message.chat.id, message_id=message.message_id
        )

    @router.error()
    async def on_error(event: ErrorEvent) -> None:
        seen.append(("error", type(event.exception).__name__, event.update.bot is not None))
        assert event.update.message is not None
        await event.update.message.answer("sorry")

    dp = Dispatcher()
    dp.include_router(router)
    return dp


async def _scenario() -> tuple[list[Any], list[Any]]:
    seen: list[Any] = []
    dp = _dispatcher(seen)
    api = _Api()
    bot = Bot(
        "42:bridge",
        session=BridgeSession(api),  # type: ignore[arg-type]
        default=DefaultBotProperties(parse_mode="HTML", link_preview_is_disabled=True),
    )
    for raw in UPDATES:
        update = Update.model_validate(raw, context={"bot": bot})
        seen.append(("bound", _all_bound(update, bot)))
        await dp.feed_update(bot, update, bot_settings={})
    return seen, api.sent


def _all_bound(obj: Any, bot: Bot) -> int:
    """How many nested aiogram objects there are; asserts each is bound to `bot`."""
    if isinstance(obj, TelegramObject):
        assert obj.bot is bot, type(obj)
        assert obj.__pydantic_private__ == {"_bot": bot}
        return 1 + sum(_all_bound(v, bot) for v in obj.__dict__.values())
    if isinstance(obj, list):
        return sum(_all_bound(v, bot) for v in obj)
    return 0


async def test_a_router_runs_the_same_with_and_without_the_fast_paths() -> None:
    fastpath.install()
    fast = await _scenario()
    fastpath.uninstall()
    try:
        stock_run = await _scenario()
    finally:
        fastpath.install()
    assert fast == stock_run
    seen, sent = fast
    assert [name for name, *_ in sent] == [
        "sendMessage",
        "sendMessage",
        "sendChatAction",
        "sendMessage",
        "sendMessage",
        "sendMessage",
        "answerCallbackQuery",
        "editMessageText",
    ]
    assert ("start", "Message", True, True) in seen
    assert ("error", "ValueError", True) in seen
    assert ("callback", True) in seen and ("entities", True) in seen
    assert sent[1][1]["parse_mode"] == "HTML" and sent[1][1]["reply_parameters"]["message_id"] == 2
    assert sent[2][1] == {"chat_id": 7, "action": "typing"}


PARTIAL: dict[str, Any] = {"message_id": 1}  # model_construct skips validation


def test_private_state_is_what_pydantic_leaves(stock: None) -> None:
    bot = Bot("42:x")
    raw = UPDATES[4]
    want = Update.model_validate(raw, context={"bot": bot})
    plain = Message.model_validate(raw["message"])
    constructed = Message.model_construct(**PARTIAL)
    fastpath.install()
    got = Update.model_validate(raw, context={"bot": bot})
    assert got == want and _all_bound(got, bot) == _all_bound(want, bot) > 5
    assert Message.model_validate(raw["message"]).__pydantic_private__ == plain.__pydantic_private__
    assert got.message is not None and got.message.as_(None).bot is None
    copied = want.model_copy()
    assert copied.bot is bot
    assert (
        Message.model_construct(**PARTIAL).__pydantic_private__ == constructed.__pydantic_private__
    )
    unbound = Message.model_validate(raw["message"])
    object.__setattr__(unbound, "__pydantic_private__", {})
    with pytest.raises(AttributeError):
        unbound.bot  # noqa: B018 - pydantic's AttributeError for an unset private attribute


def test_models_defined_later_keep_their_own_post_init() -> None:
    fastpath.install()
    calls: list[int] = []

    class Tagged(Message):
        _tag: int = PrivateAttr(default=3)

        def model_post_init(self, context: Any, /) -> None:
            super().model_post_init(context)
            calls.append(self._tag)

    bot = Bot("42:x")
    m = Tagged.model_validate(UPDATES[0]["message"], context={"bot": bot})
    assert m.bot is bot and m._tag == 3 and calls == [3]
    assert m.chat.bot is bot
    assert fastpath.install() == 0  # a class with more private state is left to pydantic


METHODS: list[TelegramMethod[Any]] = [
    SendMessage(chat_id=1, text="x"),
    SendMessage(chat_id="@chan", text="x", parse_mode=None, some_extra={"a": None, "b": [1, None]}),
    SendMessage(chat_id=1, text="x", entities=[MessageEntity(type="bold", offset=0, length=1)]),
    SendMessage(chat_id=1, text="x", reply_markup=ReplyKeyboardRemove()),
    SendMessage(chat_id=1, text="x", reply_markup=ForceReply(), parse_mode=ParseMode.MARKDOWN_V2),
    SendMessage(chat_id=1, text="x", link_preview_options=LinkPreviewOptions(is_disabled=True)),
    EditMessageText(
        chat_id=1,
        message_id=2,
        text="t",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="a", callback_data="x")]]
        ),
    ),
    AnswerCallbackQuery(callback_query_id="q", text="ok"),
    SendPhoto(chat_id=1, photo="file-id", caption="c"),
    SendChatAction(chat_id=1, action=ChatAction.TYPING),
    SetMyCommands(
        commands=[BotCommand(command="a", description="b")], scope=BotCommandScopeChat(chat_id=5)
    ),
    SendMediaGroup(
        chat_id=1, media=[InputMediaPhoto(media="a"), InputMediaPhoto(media="b", caption="x")]
    ),
    SetMessageReaction(chat_id=1, message_id=2, reaction=[ReactionTypeEmoji(emoji="👍")]),
]
#: what `request_params` leaves to aiogram's path
GENERIC: list[TelegramMethod[Any]] = [
    SendPhoto(chat_id=1, photo=URLInputFile("https://example.invalid/p.png")),
    BanChatMember(
        chat_id=1, user_id=2, until_date=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    ),
]


def _both(method: TelegramMethod[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    session = BridgeSession(None)  # type: ignore[arg-type]
    bot = Bot("42:x", session=session, default=DefaultBotProperties(parse_mode="HTML"))
    files: dict[str, Any] = {}
    want = session._generic_params(bot, method, files)
    got = request_params(
        method, lambda v: session.prepare_value(v, bot=bot, files=files, _dumps_json=False)
    )
    return got, want


@pytest.mark.parametrize("method", METHODS, ids=lambda m: type(m).__name__)
def test_request_params_are_aiogram_s(method: TelegramMethod[Any]) -> None:
    got, want = _both(method)
    assert got == want
    assert [(k, type(v)) for k, v in got.items()] == [(k, type(v)) for k, v in want.items()]


@pytest.mark.parametrize("method", GENERIC, ids=lambda m: type(m).__name__)
def test_request_params_leave_files_and_dates_to_aiogram(method: TelegramMethod[Any]) -> None:
    with pytest.raises(NotPlain):
        _both(method)


def test_event_type_is_computed_per_update_without_aiogram_s_process_wide_cache() -> None:
    fastpath.install()
    a, b = Bot("42:a"), Bot("43:b")
    # the same update id at two bots, as every bot's ids count on their own
    first = Update.model_validate(UPDATES[0] | {"update_id": 1}, context={"bot": a})
    other = Update.model_validate(UPDATES[5] | {"update_id": 1}, context={"bot": b})
    assert hash(first) == hash(other) and first != other
    assert (first.event_type, other.event_type) == ("message", "callback_query")
    assert isinstance(other.event, CallbackQuery) and other.event.bot is b
    assert not hasattr(type(first).__dict__["event_type"].fget, "cache_info")
    fastpath.uninstall()
    try:
        assert hasattr(type(first).__dict__["event_type"].fget, "cache_info")  # aiogram's
        assert (first.event_type, other.event_type) == ("message", "callback_query")
    finally:
        fastpath.install()
