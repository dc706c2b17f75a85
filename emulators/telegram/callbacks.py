"""Inline keyboards in the emulator: callback queries in, answers and edits recorded.

`POST /control/callback_query` queues a `callback_query` update as if a user pressed a
button under one of the bot's messages; the bot's answerCallbackQuery, editMessageText,
editMessageReplyMarkup and its sendMessage calls that carry a `reply_markup` are kept
per bot, oldest first, at `GET /control/bots/{bot_id}/calls`.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

import orjson

from emulators.telegram.bots import WAKE, BotState
from emulators.telegram.results import OK_TRUE, InjectError, Result, error, ok
from emulators.telegram.state import EmulatorState

QUERY_INVALID = error(
    400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
MESSAGE_NOT_FOUND = error(400, "Bad Request: message to edit not found")
TEXT_EMPTY = error(400, "Bad Request: message text is empty")
CALLS_KEPT = 1000


class Interactions:
    """Runs in the emulator's loop, beside `EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._ids = itertools.count(1)
        #: callback query id -> bot id, until answered
        self._open: dict[str, int] = {}
        self._calls: dict[int, deque[dict[str, Any]]] = {}
        #: (bot, chat, message id) -> text, of messages the bot sent or edited
        self._texts: dict[tuple[int, int, int], str] = {}

    def calls(self, bot_id: int) -> list[dict[str, Any]] | None:
        if bot_id not in self.state.bots:
            return None
        return list(self._calls.get(bot_id, ()))

    def _record(self, bot: BotState, method: str, params: dict[str, Any]) -> None:
        log = self._calls.get(bot.id)
        if log is None:
            log = self._calls[bot.id] = deque(maxlen=CALLS_KEPT)
        log.append({"method": method, **params, "at": time.time()})

    # -- control ----------------------------------------------------------------------

    def inject(self, body: Any) -> dict[str, Any]:
        """A button press: {"bot_id", "chat_id", "message_id", "data", "user_id"?}."""
        try:
            bot_id = int(body["bot_id"])
            chat_id = int(body["chat_id"])
            message_id = int(body["message_id"])
            data = str(body["data"])
            user_id = int(body.get("user_id") or (chat_id if chat_id > 0 else 1))
        except (KeyError, TypeError, ValueError) as exc:
            raise InjectError(
                f"bad callback query: need bot_id, chat_id, message_id, data ({exc!r})"
            ) from None
        bot = self.state.bots.get(bot_id)
        if bot is None:
            raise InjectError(f"unknown bot_id {bot_id}")
        query_id = str(next(self._ids))
        self._open[query_id] = bot_id
        if chat_id > 0:
            chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": "User"}
        else:
            chat = {"id": chat_id, "type": "group", "title": "Group"}
        update_id = bot.next_update_id
        bot.next_update_id = update_id + 1
        update = {
            "update_id": update_id,
            "callback_query": {
                "id": query_id,
                "from": {"id": user_id, "is_bot": False, "first_name": "User"},
                "chat_instance": str(chat_id),
                "data": data,
                "message": {
                    "message_id": message_id,
                    "from": bot.user,
                    "chat": chat,
                    "date": int(time.time()),
                    "text": self._texts.get((bot_id, chat_id, message_id), "…"),
                },
            },
        }
        bot.queue.append((update_id, orjson.dumps(update)))
        if bot.waiter is not None:
            bot.resolve_waiter(WAKE)
        return {"update_id": update_id, "callback_query_id": query_id}

    # -- Bot API methods ----------------------------------------------------------------

    def sent(self, bot: BotState, params: dict[str, Any], result: Result) -> Result:
        """After sendMessage: remember the text; record it when it carries a keyboard."""
        if result[0] != 200:
            return result
        message = orjson.loads(result[1])["result"]
        key = (bot.id, int(message["chat"]["id"]), int(message["message_id"]))
        self._texts[key] = str(params.get("text", ""))
        markup = params.get("reply_markup")
        if markup is not None:
            markup = orjson.loads(markup) if isinstance(markup, str | bytes) else markup
            message["reply_markup"] = markup
            self._record(
                bot,
                "sendMessage",
                {
                    "chat_id": key[1],
                    "message_id": key[2],
                    "text": params.get("text"),
                    "reply_markup": markup,
                },
            )
            return ok(message)
        return result

    def answer_callback_query(self, bot: BotState, params: dict[str, Any]) -> Result:
        query_id = str(params.get("callback_query_id", ""))
        if self._open.get(query_id) != bot.id:
            return QUERY_INVALID
        del self._open[query_id]
        self._record(
            bot,
            "answerCallbackQuery",
            {
                "callback_query_id": query_id,
                "text": params.get("text"),
                "show_alert": bool(params.get("show_alert", False)),
            },
        )
        return OK_TRUE

    def edit_message_text(self, bot: BotState, params: dict[str, Any]) -> Result:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return TEXT_EMPTY
        return self._edit(bot, "editMessageText", params, text)

    def edit_message_reply_markup(self, bot: BotState, params: dict[str, Any]) -> Result:
        return self._edit(bot, "editMessageReplyMarkup", params, None)

    def _edit(self, bot: BotState, method: str, params: dict[str, Any], text: str | None) -> Result:
        try:
            chat_id = int(params["chat_id"])
            message_id = int(params["message_id"])
        except (KeyError, TypeError, ValueError):
            return error(400, "Bad Request: chat_id and message_id are required")
        key = (bot.id, chat_id, message_id)
        chat = bot.chats.get(chat_id)
        if chat is None or not 0 < message_id < chat.next_message_id:
            return MESSAGE_NOT_FOUND
        old = self._texts.get(key, "")
        markup = params.get("reply_markup")
        if isinstance(markup, str | bytes):
            markup = orjson.loads(markup)
        if text is not None and text == old and markup is None:
            return error(400, "Bad Request: message is not modified")
        if text is not None:
            self._texts[key] = text
        self._record(
            bot,
            method,
            {"chat_id": chat_id, "message_id": message_id, "text": text, "reply_markup": markup},
        )
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": bot.user,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "date": int(time.time()),
            "edit_date": int(time.time()),
            "text": self._texts.get(key, ""),
        }
        if markup is not None:
            message["reply_markup"] = markup
        return ok(message)
