"""`/bot<token>/<method>`: the Bot API methods the emulator answers.

A request passes, in order: a known method (else 404), an outage (emulators/telegram/
state.py), the token (404 malformed, 401 unknown or revoked), the bot's session
(sessions.py), then its parameters (400 on a wrong type). getUpdates is the one method
that may wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from emulators.telegram.bots import BotState
from emulators.telegram.callbacks import Interactions
from emulators.telegram.http_io import (
    BadParam,
    bool_param,
    int_param,
    read_params,
    reply_to_param,
    result_response,
)
from emulators.telegram.results import (
    CHAT_ID_EMPTY,
    CHAT_NOT_FOUND,
    MAX_TEXT,
    NOT_FOUND,
    OK_TRUE,
    TEXT_EMPTY,
    TEXT_TOO_LONG,
    Result,
    error,
)
from emulators.telegram.sessions import ServerSessions
from emulators.telegram.state import EmulatorState


class BotRoutes:
    """Dispatches Bot API calls to `EmulatorState`, `Interactions` and `ServerSessions`."""

    def __init__(
        self, state: EmulatorState, interactions: Interactions, sessions: ServerSessions
    ) -> None:
        self.state = state
        self.interactions = ia = interactions
        self.sessions = sessions
        sync_methods: dict[str, Callable[[BotState, dict[str, Any]], Result]] = {
            "getme": lambda bot, _p: state.get_me(bot),
            "sendmessage": self._send_message,
            "sendchataction": self._send_chat_action,
            "deletemessage": self._delete_message,
            "setwebhook": self._set_webhook,
            "deletewebhook": lambda bot, p: state.delete_webhook(
                bot, bool_param(p.get("drop_pending_updates"))
            ),
            "getwebhookinfo": lambda bot, _p: state.webhook_info(bot),
            "logout": lambda bot, _p: self.sessions.log_out(bot),
            "close": lambda bot, _p: self.sessions.close(bot),
            "answercallbackquery": ia.answer_callback_query,
            "editmessagetext": ia.edit_message_text,
            "editmessagereplymarkup": ia.edit_message_reply_markup,
        }
        self._sync_methods = sync_methods

    async def handle(self, request: web.BaseRequest, path: str) -> web.Response:
        slash = path.find("/", 4)
        if slash < 0:
            return result_response(NOT_FOUND)
        token = path[4:slash]
        method = path[slash + 1 :].lower()
        sync = self._sync_methods.get(method)
        if sync is None and method != "getupdates":
            return result_response(NOT_FOUND)
        down = self.state.outage_answer()
        if down is not None:
            return result_response(down)
        bot = self.state.authenticate(token)
        if not isinstance(bot, BotState):
            return result_response(bot)
        refused = self.sessions.admit(bot)
        if refused is not None:
            return result_response(refused)
        try:
            params = await read_params(request)
            if sync is not None:
                return result_response(sync(bot, params))
            offset = int_param(params.get("offset"), "offset", 0)
            limit = int_param(params.get("limit"), "limit", 100)
            timeout = int_param(params.get("timeout"), "timeout", 0)
            assert offset is not None and limit is not None and timeout is not None
            return result_response(await self.state.get_updates(bot, offset, limit, timeout))
        except BadParam as exc:
            return result_response(error(400, f"Bad Request: invalid parameter {exc}"))

    def _send_message(self, bot: BotState, params: dict[str, Any]) -> Result:
        raw_chat = params.get("chat_id")
        if raw_chat is None or raw_chat == "":
            return CHAT_ID_EMPTY
        try:
            chat_id = int_param(raw_chat, "chat_id")
        except BadParam:
            return CHAT_NOT_FOUND
        if not chat_id:
            return CHAT_NOT_FOUND
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return TEXT_EMPTY
        if len(text) > MAX_TEXT:
            return TEXT_TOO_LONG
        result = self.state.send_message(bot, chat_id, text, reply_to_param(params))
        return self.interactions.sent(bot, params, result)

    def _send_chat_action(self, bot: BotState, params: dict[str, Any]) -> Result:
        raw_chat = params.get("chat_id")
        if raw_chat is None or raw_chat == "":
            return CHAT_ID_EMPTY
        if not params.get("action"):
            return error(400, "Bad Request: action is empty")
        return OK_TRUE

    def _delete_message(self, bot: BotState, params: dict[str, Any]) -> Result:
        chat_id = int_param(params.get("chat_id"), "chat_id")
        message_id = int_param(params.get("message_id"), "message_id")
        if not chat_id:
            return CHAT_ID_EMPTY
        if message_id is None:
            return error(400, "Bad Request: message identifier is not specified")
        return self.state.delete_message(bot, chat_id, message_id)

    def _set_webhook(self, bot: BotState, params: dict[str, Any]) -> Result:
        url = params.get("url") or ""
        secret = params.get("secret_token")
        max_connections = int_param(params.get("max_connections"), "max_connections", 40)
        assert max_connections is not None
        return self.state.set_webhook(
            bot,
            str(url),
            None if secret is None else str(secret),
            bool_param(params.get("drop_pending_updates")),
            max_connections,
        )
