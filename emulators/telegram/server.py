"""HTTP front of the emulator: the Bot API (`/bot<token>/<method>`) and `/control/...`.

A single low-level aiohttp handler (no router, no middlewares, no access log)
dispatches on the path; bodies are orjson. Handler cancellation is on, so a
client that hangs up during a long poll cancels its handler, whose `finally`
drops the pending future.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog
from aiohttp import web

from emulators.telegram.callbacks import Interactions
from emulators.telegram.openapi import document
from emulators.telegram.sessions import ServerSessions
from emulators.telegram.state import (
    CHAT_ID_EMPTY,
    CHAT_NOT_FOUND,
    MAX_TEXT,
    NOT_FOUND,
    OK_TRUE,
    TEXT_EMPTY,
    TEXT_TOO_LONG,
    BotState,
    EmulatorState,
    InjectError,
    LimitSpec,
    RateLimits,
    Result,
    error,
)
from emulators.telegram.webhooks import WebhookPolicy, WebhookSender

if TYPE_CHECKING:
    from emulators.telegram.control import EmulatorControl

log = structlog.get_logger(__name__)

_JSON_CT: Final = "application/json"
_FORM_CTS: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_TRUE_STRINGS: Final = frozenset({"true", "1", "yes", "on"})
#: Largest request body accepted (bulk inject of ~100k messages).
MAX_BODY: Final = 64 * 1024 * 1024


class BadParam(ValueError):
    """A Bot API parameter had the wrong type: 400."""


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (thousands of long polls need fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def _json(status: int, body: bytes) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON_CT)


def _result(res: Result) -> web.Response:
    return web.Response(body=res[1], status=res[0], content_type=_JSON_CT)


def _control_error(status: int, message: str) -> web.Response:
    return _json(status, orjson.dumps({"error": message}))


def _int(value: Any, name: str, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BadParam(name)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return int(float(value))
            except ValueError:
                raise BadParam(name) from None
    raise BadParam(name)


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in _TRUE_STRINGS
    return bool(value)


def _reply_to(params: dict[str, Any]) -> int | None:
    rp = params.get("reply_parameters")
    if rp is not None:
        if isinstance(rp, str):
            try:
                rp = orjson.loads(rp)
            except orjson.JSONDecodeError:
                raise BadParam("reply_parameters") from None
        if isinstance(rp, dict):
            mid = _int(rp.get("message_id"), "reply_parameters")
            if mid is not None:
                return mid
    return _int(params.get("reply_to_message_id"), "reply_to_message_id")


async def _params(request: web.BaseRequest) -> dict[str, Any]:
    """Telegram takes parameters from the query string, a JSON body or a form body."""
    params: dict[str, Any] = {}
    if request.query_string:
        params.update(request.query)
    if request.body_exists:
        ctype = request.content_type
        if ctype in _FORM_CTS:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    params[key] = value
        else:
            raw = await request.read()
            if raw:
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise BadParam("body") from None
                if isinstance(data, dict):
                    params.update(data)
    return params


class EmulatorServer:
    """Serves one `EmulatorState` over HTTP."""

    def __init__(self, state: EmulatorState, webhook_policy: WebhookPolicy | None = None) -> None:
        self.state = state
        self.webhooks = WebhookSender(webhook_policy)
        state.on_webhook = self.webhooks.notify
        self._web: web.Server | None = None
        self._server: asyncio.Server | None = None
        self.port = 0
        self.interactions = ia = Interactions(state)
        #: logOut / close (emulators/telegram/sessions.py); tests may shorten its windows
        self.sessions = ServerSessions(state)
        sync_methods: dict[str, Callable[[BotState, dict[str, Any]], Result]] = {
            "getme": lambda bot, _p: state.get_me(bot),
            "sendmessage": self._send_message,
            "sendchataction": self._send_chat_action,
            "deletemessage": self._delete_message,
            "setwebhook": self._set_webhook,
            "deletewebhook": lambda bot, p: state.delete_webhook(
                bot, _bool(p.get("drop_pending_updates"))
            ),
            "getwebhookinfo": lambda bot, _p: state.webhook_info(bot),
            "logout": lambda bot, _p: self.sessions.log_out(bot),
            "close": lambda bot, _p: self.sessions.close(bot),
            "answercallbackquery": ia.answer_callback_query,
            "editmessagetext": ia.edit_message_text,
            "editmessagereplymarkup": ia.edit_message_reply_markup,
        }
        self._sync_methods = sync_methods
        self._control_get: dict[str, Callable[[web.BaseRequest], web.Response]] = {
            "stats": self._c_stats,
            "polling": self._c_polling,
            "openapi.json": lambda _request: _json(200, orjson.dumps(document())),
        }
        self._control_post: dict[str, Callable[[Any], web.Response]] = {
            "bots": self._c_create_bots,
            "inject": self._c_inject,
            "revoke": self._c_revoke,
            "reset_stats": self._c_reset_stats,
            "outage": self._c_outage,
            "callback_query": lambda body: _json(200, orjson.dumps(ia.inject(body))),
            "chats": self._c_create_chats,
            "block": self._c_block,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str, port: int, *, backlog: int = 8192) -> int:
        loop = asyncio.get_running_loop()
        self._web = web.Server(
            self.handle,
            request_factory=self._make_request,
            handler_cancellation=True,
            access_log=None,
            keepalive_timeout=75.0,
        )
        self._server = await loop.create_server(
            self._web, host, port, backlog=backlog, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def _make_request(
        self,
        message: Any,
        payload: Any,
        protocol: Any,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # Bulk /control/inject bodies exceed aiohttp's 1 MiB default.
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=MAX_BODY,
        )

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            self._server.close()
        self.state.close()  # answer pending long polls with []
        await self.webhooks.close()
        if self._web is not None:
            await asyncio.sleep(0)  # let those answers reach their handlers
            self._web.pre_shutdown()  # close idle keep-alive connections
            await self._web.shutdown(grace)
        if self._server is not None:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), grace)
        self._server = None
        self._web = None

    # ------------------------------------------------------------------ dispatch

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/bot"):
            return await self._bot_api(request, path)
        if path.startswith("/control/"):
            return await self._control(request, path[9:])
        return _result(NOT_FOUND)

    async def _bot_api(self, request: web.BaseRequest, path: str) -> web.Response:
        slash = path.find("/", 4)
        if slash < 0:
            return _result(NOT_FOUND)
        token = path[4:slash]
        method = path[slash + 1 :].lower()
        sync = self._sync_methods.get(method)
        if sync is None and method != "getupdates":
            return _result(NOT_FOUND)
        down = self.state.outage_answer()
        if down is not None:
            return _result(down)
        bot = self.state.authenticate(token)
        if not isinstance(bot, BotState):
            return _result(bot)
        refused = self.sessions.admit(bot)
        if refused is not None:
            return _result(refused)
        try:
            params = await _params(request)
            if sync is not None:
                return _result(sync(bot, params))
            offset = _int(params.get("offset"), "offset", 0)
            limit = _int(params.get("limit"), "limit", 100)
            timeout = _int(params.get("timeout"), "timeout", 0)
            assert offset is not None and limit is not None and timeout is not None
            return _result(await self.state.get_updates(bot, offset, limit, timeout))
        except BadParam as exc:
            return _result(error(400, f"Bad Request: invalid parameter {exc}"))

    def _send_message(self, bot: BotState, params: dict[str, Any]) -> Result:
        raw_chat = params.get("chat_id")
        if raw_chat is None or raw_chat == "":
            return CHAT_ID_EMPTY
        try:
            chat_id = _int(raw_chat, "chat_id")
        except BadParam:
            return CHAT_NOT_FOUND
        if not chat_id:
            return CHAT_NOT_FOUND
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return TEXT_EMPTY
        if len(text) > MAX_TEXT:
            return TEXT_TOO_LONG
        result = self.state.send_message(bot, chat_id, text, _reply_to(params))
        return self.interactions.sent(bot, params, result)

    def _send_chat_action(self, bot: BotState, params: dict[str, Any]) -> Result:
        raw_chat = params.get("chat_id")
        if raw_chat is None or raw_chat == "":
            return CHAT_ID_EMPTY
        if not params.get("action"):
            return error(400, "Bad Request: action is empty")
        return OK_TRUE

    def _delete_message(self, bot: BotState, params: dict[str, Any]) -> Result:
        chat_id = _int(params.get("chat_id"), "chat_id")
        message_id = _int(params.get("message_id"), "message_id")
        if not chat_id:
            return CHAT_ID_EMPTY
        if message_id is None:
            return error(400, "Bad Request: message identifier is not specified")
        return self.state.delete_message(bot, chat_id, message_id)

    def _set_webhook(self, bot: BotState, params: dict[str, Any]) -> Result:
        url = params.get("url") or ""
        secret = params.get("secret_token")
        max_connections = _int(params.get("max_connections"), "max_connections", 40)
        assert max_connections is not None
        return self.state.set_webhook(
            bot,
            str(url),
            None if secret is None else str(secret),
            _bool(params.get("drop_pending_updates")),
            max_connections,
        )

    # ------------------------------------------------------------------ control API

    async def _control(self, request: web.BaseRequest, sub: str) -> web.Response:
        try:
            if request.method == "GET":
                getter = self._control_get.get(sub)
                if getter is not None:
                    return getter(request)
                parts = sub.split("/")
                if len(parts) == 2 and parts[0] == "chats":
                    return self._c_chats(int(parts[1]))
                if len(parts) == 3 and parts[0] == "bots" and parts[2] == "sent":
                    return self._c_sent(int(parts[1]))
                if len(parts) == 3 and parts[0] == "bots" and parts[2] == "calls":
                    calls = self.interactions.calls(int(parts[1]))
                    if calls is None:
                        return _control_error(404, f"unknown bot_id {parts[1]}")
                    return _json(200, orjson.dumps(calls))
                return _control_error(404, "no such control endpoint")
            if request.method == "POST":
                poster = self._control_post.get(sub)
                if poster is None:
                    return _control_error(404, "no such control endpoint")
                raw = await request.read()
                body = orjson.loads(raw) if raw else {}
                return poster(body)
            return _control_error(405, "use GET or POST")
        except (InjectError, ValueError, TypeError, KeyError) as exc:
            return _control_error(400, str(exc))

    def _c_stats(self, request: web.BaseRequest) -> web.Response:
        per_bot = request.query.get("bots", "1") not in ("0", "false", "no")
        stats = self.state.stats(per_bot)
        stats["webhooks"] = self.webhooks.as_dict()
        return _json(200, orjson.dumps(stats))

    def _c_polling(self, request: web.BaseRequest) -> web.Response:
        since = float(request.query.get("since", "0"))
        return _json(200, orjson.dumps({"count": self.state.polling_since(since)}))

    def _c_chats(self, bot_id: int) -> web.Response:
        stats = self.state.chat_stats(bot_id)
        if stats is None:
            return _control_error(404, f"unknown bot_id {bot_id}")
        return _json(200, orjson.dumps(stats))

    def _c_sent(self, bot_id: int) -> web.Response:
        sent = self.state.sent_log(bot_id)
        if sent is None:
            return _control_error(404, f"unknown bot_id {bot_id}")
        return _json(200, orjson.dumps(sent))

    def _c_create_bots(self, body: Any) -> web.Response:
        if not isinstance(body, dict):
            raise InjectError('expected {"count": N} or {"tokens": [...]}')
        bots: list[BotState] = []
        tokens = body.get("tokens")
        if tokens is not None:
            if not isinstance(tokens, list):
                raise InjectError("tokens must be a list")
            bots.extend(self.state.add_token(str(t)) for t in tokens)
        count = int(body.get("count", 0))
        if count < 0:
            raise InjectError("count must be >= 0")
        bots.extend(self.state.create_bots(count))
        log.info("emulator.bots_created", count=len(bots), total=len(self.state.bots))
        return _json(
            200,
            orjson.dumps(
                {"bots": [{"id": b.id, "token": b.token, "username": b.username} for b in bots]}
            ),
        )

    def _c_inject(self, body: Any) -> web.Response:
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            raise InjectError('expected {"messages": [...]}')
        ids = self.state.inject(messages)
        return _json(200, orjson.dumps({"update_ids": ids}))

    def _c_revoke(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or "bot_id" not in body:
            raise InjectError('expected {"bot_id": N}')
        bot_id = int(body["bot_id"])
        if not self.state.revoke(bot_id):
            return _control_error(404, f"unknown bot_id {bot_id}")
        return _json(200, b'{"ok":true}')

    def _c_outage(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or "code" not in body:
            raise InjectError('expected {"code": 502, "seconds": 30, "retry_after": 5}')
        ra = body.get("retry_after")
        self.state.start_outage(
            int(body["code"]), float(body.get("seconds", 30)), None if ra is None else int(ra)
        )
        return _json(200, b'{"ok":true}')

    def _c_create_chats(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or "bot_id" not in body:
            raise InjectError('expected {"bot_id": N, "count": N, "first_id": 1}')
        ids = self.state.create_chats(
            int(body["bot_id"]), int(body.get("count", 0)), int(body.get("first_id", 1))
        )
        return _json(200, orjson.dumps({"created": len(ids)}))

    def _c_block(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or "bot_id" not in body or "chat_id" not in body:
            raise InjectError('expected {"bot_id": N, "chat_id": N, "reason": "blocked"}')
        reason = str(body.get("reason", "blocked"))
        self.state.block(int(body["bot_id"]), int(body["chat_id"]), reason)
        return _json(200, b'{"ok":true}')

    def _c_reset_stats(self, _body: Any) -> web.Response:
        self.state.reset_stats()
        return _json(200, b'{"ok":true}')


# --------------------------------------------------------------------------- entry points


@dataclass(slots=True)
class RunningEmulator:
    """An emulator serving in this process (from `open_emulator`)."""

    host: str
    port: int
    state: EmulatorState
    server: EmulatorServer

    @property
    def base_url(self) -> str:
        """The Bot API base to give bots (`{base_url}/bot<token>/<method>`)."""
        return f"http://{self.host}:{self.port}"

    def control(self, timeout: float = 10.0) -> EmulatorControl:
        from emulators.telegram.control import EmulatorControl

        return EmulatorControl(self.base_url, timeout=timeout)


@asynccontextmanager
async def open_emulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    per_bot: LimitSpec = "30/1",
    per_chat: LimitSpec = "1/1",
    per_group: LimitSpec = "20/60",
    rate_limits: bool = True,
    sent_log_limit: int = 1_000,
    webhook_policy: WebhookPolicy | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Run an emulator on the current loop for the duration of the block.

    `port=0` picks a free port. A limit of `None` disables it; `rate_limits=False`
    disables all three.
    """
    raise_nofile_limit()
    limits = RateLimits.of(per_bot, per_chat, per_group, enabled=rate_limits)
    state = EmulatorState(limits, sent_log_limit=sent_log_limit)
    server = EmulatorServer(state, webhook_policy)
    bound = await server.start(host, port)
    try:
        yield RunningEmulator(host, bound, state, server)
    finally:
        await server.stop()


async def serve(
    host: str,
    port: int,
    limits: RateLimits,
    *,
    sent_log_limit: int = 1_000,
    on_ready: Callable[[str, int], Awaitable[None] | None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation)."""
    nofile = raise_nofile_limit()
    state = EmulatorState(limits, sent_log_limit=sent_log_limit)
    server = EmulatorServer(state)
    bound = await server.start(host, port)
    log.info("emulator.listening", host=host, port=bound, nofile=nofile, **limits.as_dict())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            maybe = on_ready(host, bound)
            if maybe is not None:
                await maybe
        await stop.wait()
    finally:
        started = time.monotonic()
        await server.stop()
        log.info("emulator.stopped", seconds=round(time.monotonic() - started, 3))


def run_emulator(
    host: str,
    port: int,
    *,
    per_bot: LimitSpec = "30/1",
    per_chat: LimitSpec = "1/1",
    per_group: LimitSpec = "20/60",
    rate_limits: bool = True,
    sent_log_limit: int = 1_000,
    on_ready: Callable[[str, int], Awaitable[None] | None] | None = None,
) -> None:
    """Blocking entry point (`python -m emulators.telegram`, `botvisor emulator`). Uses uvloop
    when installed. `on_ready(host, port)` is called once the socket is bound."""
    limits = RateLimits.of(per_bot, per_chat, per_group, enabled=rate_limits)
    coro = serve(host, port, limits, sent_log_limit=sent_log_limit, on_ready=on_ready)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
