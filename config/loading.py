"""Loading settings: the TOML file, BOTVISOR_* environment, overrides; errors that name
the key, where its value came from and what is allowed (`ConfigError`, exit 78)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from config.errors import ConfigError
from config.sections.runtime import default_state_dir
from config.settings import ENV_NOT_SETTINGS, ENV_PREFIX, Settings


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """BOTVISOR_SECTION__KEY[__SUBKEY]=value -> nested dict; unknown names are errors."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment {name}: conflicts with another variable")
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: ValidationError, origin: Mapping[tuple[str, ...], str]) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc) or "(top level)"
        where = origin.get(loc, "")
        if e["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = ", ".join(sorted(parent.model_fields)) if parent else "?"
            lines.append(f"{key}: unknown key{where}; allowed here: {allowed}")
        else:
            lines.append(f"{key}: {e['msg'].removeprefix('Value error, ')}{where}")
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(part)
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _origins(tree: Mapping[str, Any], label: str, prefix: tuple[str, ...] = ()) -> dict:
    out: dict[tuple[str, ...], str] = {}
    for k, v in tree.items():
        loc = (*prefix, k)
        if isinstance(v, Mapping):
            out.update(_origins(v, label, loc))
        out[loc] = label
    return out


def state_dir_origin(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """Where `state.dir` came from: the environment, the config file or a default rule."""
    environ = os.environ if environ is None else environ
    if f"{ENV_PREFIX}STATE__DIR" in environ:
        return f"from environment {ENV_PREFIX}STATE__DIR"
    file = config_path(path, environ)
    if file is not None:
        try:
            if "dir" in tomllib.loads(file.read_text(encoding="utf-8")).get("state", {}):
                return f"state.dir in {file}"
        except (OSError, tomllib.TOMLDecodeError):
            pass
    return default_state_dir(file, environ)[1]


def config_path(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The config file in use: `path`, else $BOTVISOR_CONFIG, else ./botvisor.toml if present."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get("BOTVISOR_CONFIG"):
        path = environ["BOTVISOR_CONFIG"]
    if path is None and Path("botvisor.toml").is_file():
        path = Path("botvisor.toml")
    return None if path is None else Path(path)


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read TOML `path` (or ./botvisor.toml if present), overlay environment and overrides.

    Raises ConfigError naming every bad key and what is allowed.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    path = config_path(path, environ)
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"config file {p}: cannot read: {exc.strerror}") from None
        origin.update(_origins(data, f" (in {p})"))
    env_tree = _env_overrides(environ)
    origin.update(_env_origins(env_tree))
    state = data.get("state") if isinstance(data.get("state"), dict) else None
    if state is not None and isinstance(state.get("dir"), str) and path is not None:
        state["dir"] = str(Path(path).absolute().parent / state["dir"])  # relative to the file
    given = [t.get("state", {}) for t in (data, env_tree, overrides or {})]
    if not any(isinstance(g, Mapping) and "dir" in g for g in given):
        data = _merge(data, {"state": {"dir": str(default_state_dir(path, environ)[0])}})
    # Start from the defaults so a partial nested value (one field of a Rate) keeps the rest.
    data = _merge(_merge(Settings().model_dump(), data), env_tree)
    if overrides:
        data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


def _env_origins(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict:
    out: dict[tuple[str, ...], str] = {}
    for k, v in tree.items():
        loc = (*prefix, k)
        if isinstance(v, Mapping):
            out.update(_env_origins(v, loc))
        out[loc] = f" (from environment {ENV_PREFIX}{'__'.join(loc).upper()})"
    return out
