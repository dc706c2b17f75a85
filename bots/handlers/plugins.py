"""Handler references beyond the built-ins: entry points and import paths.

A bot's `handler` is a built-in name (`echo`), a name another package registered under
the entry-point group `botvisor.handlers`, or an import path `package.module:attr`
whose `attr` is an aiogram `Router`, an aiogram `Dispatcher`, or a factory
`(HandlerDeps) -> Handler`. A module may declare its bots' settings model as a
module-level `settings_model` (a pydantic model); without one any JSON object is taken.

Resolved references are cached per process (a module is imported once per worker, so
one Dispatcher serves all bots of a Router); a failure is cached for `FAILURE_TTL_S`, so
a worker starting 1,000 bots of a broken module imports it once, not 1,000 times.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel

from bots.handlers.base import Handler, HandlerDeps, UnknownHandler

GROUP: Final = "botvisor.handlers"
FAILURE_TTL_S: Final = 10.0
_REF: Final = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

Kind = Literal["router", "dispatcher", "factory"]


class HandlerLoadError(UnknownHandler):
    """A handler reference that does not resolve: the message says why."""


@dataclass(frozen=True, slots=True)
class Plugin:
    ref: str
    kind: Kind
    #: where it came from: "entry point NAME = VALUE" or "import path"
    origin: str
    target: Any
    settings_model: type[BaseModel] | None

    def factory(self) -> Callable[[HandlerDeps], Handler]:
        if self.kind == "factory":
            return self.target  # type: ignore[no-any-return]
        from bots.bridge.handler import aiogram_factory

        return aiogram_factory(self.ref, self.target)


_loaded: dict[str, Plugin] = {}
_failed: dict[str, tuple[float, str]] = {}


def is_reference(name: str) -> bool:
    """Whether `name` looks like `package.module:attr`."""
    return _REF.match(name) is not None


def use_paths(paths: Iterable[Path | str]) -> None:
    """Put the configured handler directories at the front of sys.path (idempotent)."""
    for path in reversed([str(Path(p).absolute()) for p in paths]):
        if path not in sys.path:
            sys.path.insert(0, path)


def registered() -> dict[str, EntryPoint]:
    """Handlers other installed packages registered, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def registered_names() -> frozenset[str]:
    """Entry-point names, read once per process (scanning installed packages is slow)."""
    global _names
    if _names is None:
        _names = frozenset(registered())
    return _names


_names: frozenset[str] | None = None


def load(ref: str) -> Plugin:
    """The plugin `ref` names (an entry-point name or an import path). Raises HandlerLoadError."""
    plugin = _loaded.get(ref)
    if plugin is not None:
        return plugin
    failed = _failed.get(ref)
    if failed is not None and time.monotonic() - failed[0] < FAILURE_TTL_S:
        raise HandlerLoadError(failed[1])
    try:
        plugin = _resolve(ref)
    except HandlerLoadError as exc:
        _failed[ref] = (time.monotonic(), str(exc))
        raise
    _failed.pop(ref, None)
    _loaded[ref] = plugin
    return plugin


def _resolve(ref: str) -> Plugin:
    ep = registered().get(ref)
    if ep is not None:
        origin = f"entry point {ep.name} = {ep.value}"
        target = _guard(ref, ep.load)
        module = ep.module
    elif is_reference(ref):
        origin = "import path"
        module, _, attr = ref.partition(":")
        mod = _guard(ref, lambda: importlib.import_module(module))
        target = mod
        for part in attr.split("."):
            if not hasattr(target, part):
                raise HandlerLoadError(f"handler {ref!r}: module {module} has no {attr!r}")
            target = getattr(target, part)
    else:
        raise HandlerLoadError(
            f"unknown handler {ref!r}: not a built-in, not an entry point in group {GROUP!r}, "
            "and not an import path like package.module:router"
        )
    return Plugin(ref, _kind(ref, target), origin, target, _settings_model(ref, module))


def _guard(ref: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    # SystemExit too: a module calling sys.exit() at import must not end the worker
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code's error is the reference's
        raise HandlerLoadError(
            f"handler {ref!r} does not import: {type(exc).__name__}: {exc}"
        ) from None


def _kind(ref: str, target: Any) -> Kind:
    # a Router's module imported aiogram already; a factory's need not (seconds of import)
    aiogram = sys.modules.get("aiogram")
    if aiogram is not None and isinstance(target, aiogram.Dispatcher):
        return "dispatcher"
    if aiogram is not None and isinstance(target, aiogram.Router):
        return "router"
    if callable(target) and not inspect.isbuiltin(target):
        return "factory"
    raise HandlerLoadError(
        f"handler {ref!r} is a {type(target).__name__}, not an aiogram Router, an aiogram "
        "Dispatcher or a factory (deps) -> Handler"
    )


def _settings_model(ref: str, module: str) -> type[BaseModel] | None:
    model = getattr(sys.modules.get(module), "settings_model", None)
    if model is None:
        return None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise HandlerLoadError(
            f"handler {ref!r}: {module}.settings_model is not a pydantic model class"
        )
    return model


_preloading: dict[str, asyncio.Future[None]] = {}


async def preload(ref: str) -> None:
    """Import `ref` off the event loop (aiogram alone takes seconds to import, which would
    stall the worker's heartbeats); concurrent callers share one import. Never raises:
    a failure is cached, and `build` raises it for each bot."""
    if ref in _loaded or not (is_reference(ref) or ref in registered_names()):
        return
    pending = _preloading.get(ref)
    if pending is None:
        pending = _preloading[ref] = asyncio.ensure_future(asyncio.to_thread(_load_quietly, ref))
        pending.add_done_callback(lambda _: _preloading.pop(ref, None))
    await asyncio.shield(pending)


def _load_quietly(ref: str) -> None:
    try:
        plugin = load(ref)
    except HandlerLoadError:
        return
    if plugin.kind != "factory":
        from bots.bridge.handler import warm_up

        warm_up()


def build(ref: str, deps: HandlerDeps) -> Handler:
    """One handler for one bot. Raises HandlerLoadError (the bot gets disabled with it)."""
    plugin = load(ref)
    try:
        return plugin.factory()(deps)
    except HandlerLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a factory bug disables its bots, not the worker
        raise HandlerLoadError(
            f"handler {ref!r} failed to build: {type(exc).__name__}: {exc}"
        ) from None
