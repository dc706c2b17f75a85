"""An aiogram Router or Dispatcher as a botvisor handler.

One Dispatcher per referenced Router per worker (its FSM storage on the context store),
shared by every bot of that handler; each bot's aiogram `Bot` is built on its first
update, so thousands of idle bots cost one small handler object each. Updates run in
the actor's chat task like any handler's: ordered per chat, confirmed once handled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.methods import SendMessage
from aiogram.types import Update

from bots.bridge import fastpath
from bots.bridge.session import BridgeSession
from bots.bridge.storage import ContextStorage
from bots.handlers.base import BotContext, Handler, HandlerDeps
from bots.telegram.errors import BotNetworkError, TelegramError
from bots.telegram.update import Incoming

# aiogram logs every update at INFO ("Update id=… is handled"); the actor counts them
logging.getLogger("aiogram.event").setLevel(logging.WARNING)

#: handler reference -> its Dispatcher, for this worker process
_dispatchers: dict[str, Dispatcher] = {}


def dispatcher_for(ref: str, target: Router, deps: HandlerDeps) -> Dispatcher:
    """The one Dispatcher of `ref` in this worker. A Dispatcher given as the handler is used
    as it is; its default in-memory FSM storage is replaced by the context store's."""
    dp = _dispatchers.get(ref)
    if dp is not None:
        return dp
    fastpath.install()  # after the Router's module is imported: its own models too
    storage: BaseStorage | None = ContextStorage(deps.context) if deps.context else None
    if isinstance(target, Dispatcher):
        dp = target
        if storage is not None and isinstance(dp.fsm.storage, MemoryStorage):
            dp.fsm.storage = storage
    else:
        dp = Dispatcher(storage=storage)
        dp.include_router(target)
    inline_magic_filters(dp)
    _dispatchers[ref] = dp
    return dp


def inline_magic_filters(dp: Dispatcher) -> int:
    """Run magic filters (`F.text`, `F.data == "x"`) on the loop instead of a thread.

    aiogram runs every sync filter through `asyncio.to_thread`; a magic filter is a pure,
    microsecond expression over the event, and the thread hop costs ~40% of an echo's
    CPU. Other sync filters and handlers (user code that may block) keep the thread."""
    patched = 0
    for router in dp.chain_tail:
        for observer in router.observers.values():
            own = getattr(observer, "_handler", None)
            for handler in [*([own] if own is not None else []), *observer.handlers]:
                for f in handler.filters or ():
                    if f.magic is not None and not f.awaitable:
                        f.callback = _on_loop(f.callback)
                        f.awaitable = True
                        patched += 1
    return patched


def _on_loop(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def run(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return run


def warm_up() -> None:
    """Build aiogram's deferred pydantic schemas of an update and a reply once (seconds on
    a busy machine), so the first update of the worker does not stall its loop."""
    message = {
        "message_id": 1,
        "date": 0,
        "chat": {"id": 1, "type": "private"},
        "from": {"id": 1, "is_bot": False, "first_name": "warm-up"},
        "text": "warm-up",
    }
    Update.model_validate({"update_id": 0, "message": message})
    SendMessage(chat_id=1, text="warm-up").model_dump(warnings=False)


def aiogram_factory(ref: str, target: Router) -> Callable[[HandlerDeps], Handler]:
    def build(deps: HandlerDeps) -> Handler:
        return AiogramHandler(dispatcher_for(ref, target, deps))

    return build


class AiogramHandler:
    """One per bot. Handlers ask for `bot_settings`, `bot_username` or `botvisor` (the
    BotContext) by parameter name, like any aiogram workflow data."""

    __slots__ = ("_bot", "_dp")

    def __init__(self, dp: Dispatcher) -> None:
        self._dp = dp
        self._bot: Bot | None = None

    def bot_for(self, ctx: BotContext) -> Bot:
        bot = self._bot
        session = bot.session if bot is not None else None
        if bot is None or not (
            isinstance(session, BridgeSession) and session.api_of_bot.same(ctx.api)
        ):
            # the token stays in the worker's BotApi: aiogram's Bot only needs the id
            bot = self._bot = Bot(f"{ctx.bot_id}:botvisor-bridge", session=BridgeSession(ctx.api))
        return bot

    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        bot = self.bot_for(ctx)
        event = Update.model_validate(update.raw, context={"bot": bot})
        data: dict[str, Any] = {
            "bot_settings": ctx.settings,
            "bot_username": ctx.username,
            "botvisor": ctx,
        }
        try:
            await self._dp.feed_update(bot, event, **data)
        except TelegramAPIError as exc:
            # unhandled by the Router: give the actor botvisor's error, so a transient
            # failure before any reply is retried and a Telegram refusal is counted
            cause = exc.__cause__
            if isinstance(cause, TelegramError | BotNetworkError):
                raise cause from None
            raise
