"""`/control/...`: the emulator's own API for tests, the demo and benchmarks (create bots,
inject messages and callback queries, revoke tokens, outages, chats, stats).

Each endpoint is documented in emulators/telegram/openapi.py; a malformed request body
answers 400 with `{"error": ...}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from emulators.telegram.bots import BotState
from emulators.telegram.callbacks import Interactions
from emulators.telegram.http_io import control_error, json_response
from emulators.telegram.openapi import document
from emulators.telegram.results import InjectError
from emulators.telegram.state import EmulatorState
from emulators.telegram.webhooks import WebhookSender

log = structlog.get_logger(__name__)


class ControlRoutes:
    """Serves `/control/<name>` (fixed names in `get_routes` / `post_routes`) and the
    per-bot paths `chats/{bot_id}`, `bots/{bot_id}/sent`, `bots/{bot_id}/calls`."""

    def __init__(
        self, state: EmulatorState, webhooks: WebhookSender, interactions: Interactions
    ) -> None:
        self.state = state
        self.webhooks = webhooks
        self.interactions = ia = interactions
        self.get_routes: dict[str, Callable[[web.BaseRequest], web.Response]] = {
            "stats": self._stats,
            "polling": self._polling,
            "openapi.json": lambda _request: json_response(200, orjson.dumps(document())),
        }
        self.post_routes: dict[str, Callable[[Any], web.Response]] = {
            "bots": self._create_bots,
            "inject": self._inject,
            "revoke": self._revoke,
            "reset_stats": self._reset_stats,
            "outage": self._outage,
            "callback_query": lambda body: json_response(200, orjson.dumps(ia.inject(body))),
            "chats": self._create_chats,
            "block": self._block,
        }

    async def handle(self, request: web.BaseRequest, sub: str) -> web.Response:
        try:
            if request.method == "GET":
                getter = self.get_routes.get(sub)
                if getter is not None:
                    return getter(request)
                parts = sub.split("/")
                if len(parts) == 2 and parts[0] == "chats":
                    return self._chats(int(parts[1]))
                if len(parts) == 3 and parts[0] == "bots" and parts[2] == "sent":
                    return self._sent(int(parts[1]))
                if len(parts) == 3 and parts[0] == "bots" and parts[2] == "calls":
                    calls = self.interactions.calls(int(parts[1]))
                    if calls is None:
                        return control_error(404, f"unknown bot_id {parts[1]}")
                    return json_response(200, orjson.dumps(calls))
                return control_error(404, "no such control endpoint")
            if request.method == "POST":
                poster = self.post_routes.get(sub)
                if poster is None:
                    return control_error(404, "no such control endpoint")
                raw = await request.read()
                body = orjson.loads(raw) if raw else {}
                return poster(body)
            return control_error(405, "use GET or POST")
        except (InjectError, ValueError, TypeError, KeyError) as exc:
            return control_error(400, str(exc))

    def _stats(self, request: web.BaseRequest) -> web.Response:
        per_bot = request.query.get("bots", "1") not in ("0", "false", "no")
        stats = self.state.stats(per_bot)
        stats["webhooks"] = self.webhooks.as_dict()
        return json_response(200, orjson.dumps(stats))

    def _polling(self, request: web.BaseRequest) -> web.Response:
        since = float(request.query.get("since", "0"))
        return json_response(200, orjson.dumps({"count": self.state.polling_since(since)}))

    def _chats(self, bot_id: int) -> web.Response:
        stats = self.state.chat_stats(bot_id)
        if stats is None:
            return control_error(404, f"unknown bot_id {bot_id}")
        return json_response(200, orjson.dumps(stats))

    def _sent(self, bot_id: int) -> web.Response:
        sent = self.state.sent_log(bot_id)
        if sent is None:
            return control_error(404, f"unknown bot_id {bot_id}")
        return json_response(200, orjson.dumps(sent))

    def _create_bots(self, body: Any) -> web.Response:
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
        return json_response(
            200,
            orjson.dumps(
                {"bots": [{"id": b.id, "token": b.token, "username": b.username} for b in bots]}
            ),
        )

    def _inject(self, body: Any) -> web.Response:
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            raise InjectError('expected {"messages": [...]}')
        ids = self.state.inject(messages)
        return json_response(200, orjson.dumps({"update_ids": ids}))

    def _revoke(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or "bot_id" not in body:
            raise InjectError('expected {"bot_id": N}')
        bot_id = int(body["bot_id"])
        if not self.state.revoke(bot_id):
            return control_error(404, f"unknown bot_id {bot_id}")
        return json_response(200, b'{"ok":true}')

    def _outage(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or "code" not in body:
            raise InjectError('expected {"code": 502, "seconds": 30, "retry_after": 5}')
        ra = body.get("retry_after")
        self.state.start_outage(
            int(body["code"]), float(body.get("seconds", 30)), None if ra is None else int(ra)
        )
        return json_response(200, b'{"ok":true}')

    def _create_chats(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or "bot_id" not in body:
            raise InjectError('expected {"bot_id": N, "count": N, "first_id": 1}')
        ids = self.state.create_chats(
            int(body["bot_id"]), int(body.get("count", 0)), int(body.get("first_id", 1))
        )
        return json_response(200, orjson.dumps({"created": len(ids)}))

    def _block(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or "bot_id" not in body or "chat_id" not in body:
            raise InjectError('expected {"bot_id": N, "chat_id": N, "reason": "blocked"}')
        reason = str(body.get("reason", "blocked"))
        self.state.block(int(body["bot_id"]), int(body["chat_id"]), reason)
        return json_response(200, b'{"ok":true}')

    def _reset_stats(self, _body: Any) -> web.Response:
        self.state.reset_stats()
        return json_response(200, b'{"ok":true}')
