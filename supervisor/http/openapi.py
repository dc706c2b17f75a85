"""The OpenAPI 3.1 document of the master's HTTP port, built from the operation table and
the pydantic models the handlers use (supervisor/http/models.py). Pure; built once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from supervisor.http.models import Error, Health, Readiness, Status

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

_REF = "#/components/schemas/{model}"
#: the error responses an authenticated endpoint may give, with what they mean
ERROR_TEXT: dict[int, str] = {
    400: "The body is not valid JSON, or the request line is longer than 8 KiB.",
    401: "No key, or not a valid owner key or admin key.",
    403: "The key may not do this (an owner naming an owner, or an admin-only endpoint), "
    "or the owner is at a quota (`quota_exceeded`, with `quota`, `limit` and `used`).",
    404: "No such bot or owner (or another owner's), or the chat was not handed off.",
    408: "The body did not arrive within 10 s.",
    409: "The bot is registered already.",
    413: "The body is larger than 1 MiB.",
    422: "A field is invalid (named in the message), or Telegram rejected the token.",
    429: "Too many failed logins from this address; `Retry-After` says when to try again.",
    502: "Telegram (getMe) did not answer.",
    503: "PostgreSQL, Redis or the context store did not answer; try again.",
}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: served by `handler` (None: registered in supervisor/http/app.py) and
    documented from the same entry."""

    method: Method
    path: str  # OpenAPI template: /v1/bots/{id}
    operation_id: str
    summary: str
    replies: tuple[Reply, ...]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    auth: bool = False
    handler: Handler | None = None
    #: query parameters: name -> OpenAPI parameter fields (description, schema)
    query: tuple[tuple[str, dict[str, Any]], ...] = ()


#: the routes supervisor/http/app.py serves itself
HOST_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/healthz",
        "healthz",
        "200 while the master's loop answers.",
        (Reply(200, "Alive.", Health),),
    ),
    Operation(
        "GET",
        "/readyz",
        "readyz",
        "200 when every worker heartbeats and runs its bots; also during a rolling upgrade, "
        "with the reason `upgrading: …` (the bots keep being served).",
        (Reply(200, "Ready.", Readiness), Reply(503, "Not ready; `reason` says why.", Readiness)),
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus text for the whole host.",
        (Reply(200, "Prometheus exposition format.", None, "text/plain"),),
    ),
    Operation(
        "GET",
        "/v1/status",
        "status",
        "Workers and bot counts of the host. Open like /metrics: no per-owner data.",
        (Reply(200, "Status.", Status),),
    ),
)


_Refs = dict[tuple[Any, str], Any]
_INT64 = 2**63 - 1
_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "id": {
        "description": "Bot id (the number before ':' in its token).",
        "schema": {"type": "integer", "minimum": 1, "maximum": _INT64},
    },
    "chat": {
        "description": "Telegram chat id (negative for groups).",
        "schema": {"type": "integer", "minimum": -_INT64 - 1, "maximum": _INT64},
    },
    "broadcast": {
        "description": "Broadcast id (from its creation's `Location`).",
        "schema": {"type": "integer", "minimum": 1, "maximum": _INT64},
    },
    "owner": {
        "description": "Owner id (`botvisor owners list`).",
        "schema": {"type": "integer", "minimum": 1, "maximum": _INT64},
    },
}


def _schemas(ops: Sequence[Operation]) -> tuple[_Refs, Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for op in ops:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted.extend((r.model, "serialization") for r in op.replies if r.model is not None)
        if op.errors:
            wanted.append((Error, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, defs = models_json_schema(unique, ref_template=_REF)
    return {(m, str(mode)): schema for (m, mode), schema in refs.items()}, defs.get("$defs", {})


def _content(schema: Any, media_type: str) -> dict[str, Any]:
    return {"content": {media_type: {"schema": schema}}}


def _operation(op: Operation, refs: _Refs) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    params = [
        {"name": name, "in": "path", "required": True, **spec}
        for name, spec in _PATH_PARAMS.items()
        if "{" + name + "}" in op.path
    ]
    params += [{"name": name, "in": "query", "required": False, **spec} for name, spec in op.query]
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            **_content(refs[(op.body, "validation")], "application/json"),
        }
    responses: dict[str, Any] = {}
    for r in op.replies:
        entry: dict[str, Any] = {"description": r.description}
        if r.model is not None:
            entry.update(_content(refs[(r.model, "serialization")], r.media_type))
        elif r.status != 204:
            plain = {"type": "object" if r.media_type == "application/json" else "string"}
            entry.update(_content(plain, r.media_type))
        responses[str(r.status)] = entry
    for status in op.errors:
        responses[str(status)] = {
            "description": ERROR_TEXT[status],
            **_content(refs[(Error, "serialization")], "application/json"),
        }
    out["responses"] = responses
    out["security"] = [{"bearer": []}] if op.auth else []
    return out


def build_document(ops: Sequence[Operation], *, version: str) -> dict[str, Any]:
    refs, defs = _schemas(ops)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "botvisor",
            "version": version,
            "description": (
                "The master's HTTP port: health, metrics, status and the admin API. "
                "Admin endpoints take `Authorization: Bearer <key>`: an owner's API key "
                "(`botvisor owners add`) sees and changes only its own bots, "
                '`security.admin_key` all. Errors are `{"error": {"code", "message"}}`.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
