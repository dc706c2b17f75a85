"""`botvisor handlers list|check`: what `--handler` may name on this host."""

from __future__ import annotations

import argparse
import sys

from bots.handlers.base import UnknownHandler
from bots.handlers.plugins import GROUP, load, use_paths
from bots.handlers.registry import HANDLERS, SETTINGS, available
from config import Settings
from supervisor.exitcodes import ExitCode


def handlers_command(settings: Settings, args: argparse.Namespace) -> int:
    use_paths(settings.handlers.paths)
    if args.handlers_command == "check":
        return _check(args.ref)
    for name, what in available():
        print(f"{name:<24} {what}")
    paths = ", ".join(str(p) for p in settings.handlers.paths) or "(none; handlers.paths)"
    print(
        f"\nimport paths: any package.module:attr (an aiogram Router, Dispatcher or a factory) "
        f"importable from sys.path plus {paths}; entry point group: {GROUP}"
    )
    return 0


def _check(ref: str) -> int:
    if ref in HANDLERS:
        print(f"{ref}: built-in, settings model {SETTINGS[ref].__name__}")
        return 0
    try:
        plugin = load(ref)
    except UnknownHandler as exc:
        print(f"botvisor: {exc}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    model = plugin.settings_model.__name__ if plugin.settings_model else "none (any JSON object)"
    kind = "a factory (deps) -> Handler" if plugin.kind == "factory" else f"aiogram {plugin.kind}"
    print(f"{ref}: {kind} ({plugin.origin}), settings model {model}")
    return 0
