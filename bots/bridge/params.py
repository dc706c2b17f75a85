"""A method's request parameters without pydantic's generic serialiser where that is exact.

aiogram's sessions send `prepare_value(v)` for each item of `method.model_dump()`,
dropping `None`. pydantic's serialiser costs ~2.5 µs per `Default(...)` value (type
inference on an unknown class), and a `SendMessage` reply carries four, its
`ReplyParameters` two more: ~20 µs of a ~60 µs send. `request_params` walks the method's
fields itself and gives the same dict as that two-step path for the values it knows:
`None`, exact `str`/`int`/`float`/`bool`, `Default`s and enum members (both left to
aiogram's own `prepare_value`), lists, dicts, and nested aiogram models whose fields are serialised
plainly (no custom serialiser, alias or exclusion) and whose class is one the field
declares (pydantic serialises a field by its declared class). Anything else (files,
datetimes, tuples, user subclasses) takes aiogram's path for the whole method.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any, Final

from aiogram.client.default import Default
from pydantic import BaseModel, PlainSerializer, WrapSerializer

#: a field whose values may be of any class (inference: each model by its own class)
ANY: Final = None
#: field -> the model classes its annotation names (or ANY)
Plan = dict[str, frozenset[type] | None]
#: per model class; None when the class does not serialise plainly
_plans: dict[type, Plan | None] = {}

Prepare = Callable[[Any], Any]


class NotPlain(Exception):
    """A value this module does not reproduce exactly: use aiogram's path."""


class _AnyField(Exception):
    """The annotation admits any value."""


def _walk_annotation(tp: Any, models: set[type]) -> bool:
    """Collect the model classes in `tp` into `models`. False where pydantic would not
    serialise it plainly (a custom serialiser, tuples, sets, unresolved names); raises
    _AnyField where it admits Any (pydantic then serialises each value by its class)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return True
    if tp is Any:
        raise _AnyField
    if isinstance(tp, typing.TypeVar | typing.ForwardRef | str):
        return False
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        if any(isinstance(m, PlainSerializer | WrapSerializer) for m in meta):
            return False
        return _walk_annotation(base, models)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        models.add(tp)
        return True
    if origin in (typing.Union, types.UnionType, list, dict) or origin is None:
        return all(_walk_annotation(arg, models) for arg in typing.get_args(tp))
    return False


def _plan(cls: type[BaseModel]) -> Plan | None:
    if cls not in _plans:
        _plans[cls] = _build_plan(cls)
    return _plans[cls]


def _build_plan(cls: type[BaseModel]) -> Plan | None:
    decorators = cls.__pydantic_decorators__
    if (
        cls.model_config.get("serialize_by_alias")
        or decorators.field_serializers
        or decorators.model_serializers
        or cls.__pydantic_computed_fields__
    ):
        return None
    plan: Plan = {}
    for name, info in cls.model_fields.items():
        if info.exclude or any(
            isinstance(m, PlainSerializer | WrapSerializer) for m in info.metadata
        ):
            return None
        models: set[type] = set()
        try:
            if not _walk_annotation(info.annotation, models):
                return None
        except _AnyField:
            plan[name] = ANY
        else:
            plan[name] = frozenset(models)
    return plan


def request_params(method: BaseModel, prepare_default: Prepare) -> dict[str, Any]:
    """`{k: prepare_value(v) for k, v in method.model_dump().items()}` less the `None`s.
    Raises NotPlain where it would not be exactly that."""
    return _model(method, prepare_default)


def _model(obj: BaseModel, prepare_default: Prepare) -> dict[str, Any]:
    plan = _plan(type(obj))
    if plan is None:
        raise NotPlain(type(obj).__name__)
    out: dict[str, Any] = {}
    for name, value in obj.__dict__.items():
        if name not in plan:
            raise NotPlain(name)
        prepared = _value(value, plan[name], prepare_default)
        if prepared is not None:
            out[name] = prepared
    extra = obj.__pydantic_extra__
    if extra:
        for name, value in extra.items():
            prepared = _value(value, ANY, prepare_default)
            if prepared is not None:
                out[name] = prepared
    return out


def _value(value: Any, allowed: frozenset[type] | None, prepare_default: Prepare) -> Any:
    t = type(value)
    if value is None or t is str or t is int or t is bool or t is float:
        return value
    if t is Default or isinstance(value, Enum):
        # pydantic's python mode leaves both as they are; aiogram's prepare_value resolves
        # a Default from the bot's defaults and sends an enum member's value
        return prepare_default(value)
    if t is list:
        return [p for item in value if (p := _value(item, allowed, prepare_default)) is not None]
    if t is dict:
        return {
            k: p
            for k, item in value.items()
            if (p := _value(item, allowed, prepare_default)) is not None
        }
    if isinstance(value, BaseModel) and (allowed is ANY or t in allowed):
        return _model(value, prepare_default)
    raise NotPlain(t.__name__)
