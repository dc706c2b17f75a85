"""The emulator's HTTP wire: Bot API parameters in (query string, JSON or form body, with
Telegram's lenient types), orjson responses out. Shared by bot_routes.py and
control_routes.py."""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from emulators.telegram.results import Result

_JSON_CT: Final = "application/json"
_FORM_CTS: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_TRUE_STRINGS: Final = frozenset({"true", "1", "yes", "on"})


class BadParam(ValueError):
    """A Bot API parameter had the wrong type: 400."""


def json_response(status: int, body: bytes) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON_CT)


def result_response(res: Result) -> web.Response:
    return web.Response(body=res[1], status=res[0], content_type=_JSON_CT)


def control_error(status: int, message: str) -> web.Response:
    return json_response(status, orjson.dumps({"error": message}))


def int_param(value: Any, name: str, default: int | None = None) -> int | None:
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


def bool_param(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in _TRUE_STRINGS
    return bool(value)


def reply_to_param(params: dict[str, Any]) -> int | None:
    rp = params.get("reply_parameters")
    if rp is not None:
        if isinstance(rp, str):
            try:
                rp = orjson.loads(rp)
            except orjson.JSONDecodeError:
                raise BadParam("reply_parameters") from None
        if isinstance(rp, dict):
            mid = int_param(rp.get("message_id"), "reply_parameters")
            if mid is not None:
                return mid
    return int_param(params.get("reply_to_message_id"), "reply_to_message_id")


async def read_params(request: web.BaseRequest) -> dict[str, Any]:
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
