"""Cheaper equivalents of three pieces of aiogram's per-update work, installed in workers.

Each replaces a generic step with one that leaves exactly the same state behind, so
handlers, filters, middlewares and error handlers see nothing different:

- Private attributes. Every aiogram object (the `Update`, each nested `Message`, `User`,
  `Chat`, every method and result) runs pydantic's generic private-attribute set-up
  after validation: per class level a wrapper, a default lookup (with an import and a
  deepcopy of "no default") and then aiogram's `self._bot = context["bot"]` through
  `BaseModel.__setattr__`. Where a class's only private attribute is aiogram's `_bot`
  without default and its post-init is that stock chain, one function sets the same
  `__pydantic_private__ = {"_bot": bot}` directly (~14% of an echo's CPU in process).
- `Update.event_type`. aiogram caches it in one process-wide `lru_cache` (128 entries)
  keyed by the Update, whose hash is its `update_id`. Update ids are per bot, so with
  many bots in one process equal ids meet in that cache, and every lookup (two per
  update) runs pydantic's `__eq__` over whole Updates and their Bots: a third of a
  bridged echo's CPU at 1,000 bots against the emulator (every bot counts from 1). The
  same function runs uncached: it is a few attribute checks on a frozen model, and
  the cache could only ever return what it computes.
- Middleware chains. aiogram builds a chain per event and observer; with no middleware
  in it the chain is only a wrapper around the handler that aiogram calls at once, so
  `functools.wraps` (copying name, doc and `__dict__` for nobody to read) is skipped.
  Chains with middlewares are built by aiogram's own code: middlewares see its wrappers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiogram.client.context_controller import BotContextController
from aiogram.dispatcher.middlewares.manager import MiddlewareManager
from aiogram.types import Update
from pydantic_core import PydanticUndefined

#: aiogram's own `BotContextController.model_post_init` (under pydantic's wrapper)
_STOCK_POST_INIT: Callable[..., Any] = inspect.unwrap(BotContextController.model_post_init)
_PYDANTIC_WRAPPER = "wrapped_model_post_init"

_original_post_inits: dict[type, Callable[..., Any]] = {}
_original_wrap: Any = None
_original_event_type: property | None = None


def _bind_bot(self: Any, context: Any, /) -> None:
    """What pydantic's `init_private_attributes` followed by aiogram's post-init leave."""
    bot = context.get("bot") if context else None
    private = getattr(self, "__pydantic_private__", None)
    if private is None:
        object.__setattr__(self, "__pydantic_private__", {"_bot": bot})
    else:
        private["_bot"] = bot


def _read_bot(self: Any) -> Any:
    """`obj._bot` as pydantic's `BaseModel.__getattr__` answers it, without first probing
    the private attribute for a descriptor (an AttributeError raised and caught per read)."""
    try:
        return self.__pydantic_private__["_bot"]
    except KeyError:
        raise AttributeError(f"{type(self).__name__!r} object has no attribute '_bot'") from None


_BOT_PROPERTY: Final = property(_read_bot)


def _stock_chain(fn: Any) -> bool:
    """Whether `fn` is only pydantic's wrappers around aiogram's own post-init."""
    while fn is not _STOCK_POST_INIT:
        # functools.wraps copies the name: the code object tells pydantic's wrapper apart
        code = getattr(fn, "__code__", None)
        if code is None or code.co_name != _PYDANTIC_WRAPPER:
            return False
        fn = getattr(fn, "__wrapped__", None)
        if fn is None:
            return False
    return True


def _fits(cls: type) -> bool:
    private = getattr(cls, "__private_attributes__", None)
    if not private or private.keys() != {"_bot"}:
        return False
    attr = private["_bot"]
    if attr.default is not PydanticUndefined or attr.default_factory is not None:
        return False
    own = cls.__dict__.get("model_post_init")
    return own is not None and _stock_chain(own)


def _all_subclasses(root: type) -> list[type]:
    seen: dict[type, None] = {}
    stack: list[type] = [root]
    while stack:
        subs: list[type] = stack.pop().__subclasses__()
        for sub in subs:
            if sub not in seen:
                seen[sub] = None
                stack.append(sub)
    return list(seen)


def _wrap_middlewares(
    middlewares: Sequence[Any], handler: Callable[..., Any]
) -> Callable[[Any, dict[str, Any]], Any]:
    if middlewares:
        return _original_wrap(middlewares, handler)  # type: ignore[no-any-return]

    def handler_wrapper(event: Any, kwargs: dict[str, Any]) -> Any:
        return handler(event, **kwargs)

    return handler_wrapper


def install() -> int:
    """Install all three (idempotent; classes defined later keep pydantic's generic path).
    Returns how many model classes got the direct post-init."""
    global _original_wrap, _original_event_type
    patched = 0
    for cls in [BotContextController, *_all_subclasses(BotContextController)]:
        if cls in _original_post_inits or not _fits(cls):
            continue
        _original_post_inits[cls] = cls.__dict__["model_post_init"]
        setattr(cls, "model_post_init", _bind_bot)  # noqa: B010 - any model class
        patched += 1
    if patched and "_bot" not in BotContextController.__dict__:
        # pydantic keeps private attributes off the class, so a read falls through to
        # BaseModel.__getattr__; writes keep going through BaseModel.__setattr__
        BotContextController._bot = _BOT_PROPERTY  # type: ignore[assignment]
    cached = Update.__dict__.get("event_type")
    if _original_event_type is None and isinstance(cached, property):
        compute = getattr(cached.fget, "__wrapped__", None)  # under functools.lru_cache
        if compute is not None:
            _original_event_type = cached
            Update.event_type = property(compute)  # type: ignore[method-assign,assignment]
    if _original_wrap is None:
        _original_wrap = MiddlewareManager.__dict__["wrap_middlewares"].__func__
        MiddlewareManager.wrap_middlewares = staticmethod(_wrap_middlewares)  # type: ignore[assignment]
    return patched


def uninstall() -> None:
    """aiogram's own code back (tests and A/B measurements)."""
    global _original_wrap, _original_event_type
    for cls, fn in _original_post_inits.items():
        setattr(cls, "model_post_init", fn)  # noqa: B010
    _original_post_inits.clear()
    if BotContextController.__dict__.get("_bot") is _BOT_PROPERTY:
        del BotContextController._bot
    if _original_event_type is not None:
        Update.event_type = _original_event_type  # type: ignore[method-assign,assignment]
        _original_event_type = None
    if _original_wrap is not None:
        MiddlewareManager.wrap_middlewares = staticmethod(_original_wrap)  # type: ignore[assignment]
        _original_wrap = None
