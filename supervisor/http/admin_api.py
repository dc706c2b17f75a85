"""The admin API on the master's HTTP port: its routes and /v1/openapi.json.

Runs in the master's event loop. The operations are those of bots_api.py (/v1/bots…),
chats_api.py, and the extra ones app.py passes (broadcasts, owners, audit, upgrade); each
runs through supervisor/http/endpoint.py. Authentication: `Authorization: Bearer <key>`,
an owner's API key (its own bots only; another owner's bot is a 404) or
`security.admin_key` (all bots). Errors are JSON `{"error": {"code", "message"}}`.
The route table is also the source of the OpenAPI document.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Final

import orjson
from aiohttp import web

from supervisor.http.bots_api import BOT_OPERATIONS
from supervisor.http.chats_api import CHAT_OPERATIONS
from supervisor.http.common import ADMIN_KEY, AdminContext
from supervisor.http.openapi import HOST_OPERATIONS, Operation, Reply, build_document


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[_DOCUMENT_KEY], content_type="application/json", charset="utf-8"
    )


_DOCUMENT_KEY: Final = web.AppKey("openapi", bytes)
ADMIN_OPERATIONS: tuple[Operation, ...] = (
    *BOT_OPERATIONS,
    *CHAT_OPERATIONS,
    Operation(
        method="GET",
        path="/v1/openapi.json",
        operation_id="openapi",
        summary="This document (OpenAPI 3.1).",
        replies=(Reply(200, "The document."),),
        handler=openapi_json,
    ),
)


def _version() -> str:
    try:
        return version("botvisor")
    except PackageNotFoundError:
        return "0"


def add_admin_routes(
    app: web.Application, ctx: AdminContext, extra: tuple[Operation, ...] = ()
) -> None:
    """Register the admin API on the master's app, plus `extra` operations of other modules
    (broadcasts, owners, audit, upgrade); the document covers its other routes too."""
    app[ADMIN_KEY] = ctx
    operations = (*ADMIN_OPERATIONS, *extra)
    app[_DOCUMENT_KEY] = orjson.dumps(
        build_document((*HOST_OPERATIONS, *operations), version=_version())
    )
    for op in operations:
        assert op.handler is not None
        # [0-9], not \d: Python's \d also matches Arabic-Indic and full-width digits
        path = op.path.replace("{id}", r"{id:[0-9]{1,19}}")
        path = path.replace("{owner}", r"{owner:[0-9]{1,19}}")
        path = path.replace("{chat}", r"{chat:-?[0-9]{1,19}}")
        path = path.replace("{broadcast}", r"{broadcast:[0-9]{1,19}}")
        app.router.add_route(op.method, path, op.handler)
