"""Handler references: built-ins, import paths, entry points, settings models, and the
reasons a reference is refused with."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bots.handlers import plugins
from bots.handlers.base import HandlerDeps, UnknownHandler
from bots.handlers.registry import available, check_settings, make_handler, resolve

REF = "examples.support_bot:router"


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory of user handler modules, as `handlers.paths` names it."""
    (tmp_path / "myfactory.py").write_text(
        "from bots.handlers.echo import EchoHandler\n"
        "def make(deps):\n"
        "    return EchoHandler()\n"
        "def broken(deps):\n"
        "    raise RuntimeError('no database for me')\n"
    )
    (tmp_path / "brokenmod.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "exitmod.py").write_text("import sys\nsys.exit(3)\n")
    dist = tmp_path / "mybots-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mybots\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[botvisor.handlers]\nsupport = {REF}\n")
    plugins.use_paths([tmp_path])
    yield tmp_path
    sys.path.remove(str(tmp_path.absolute()))
    for name in ("myfactory", "brokenmod", "exitmod"):
        sys.modules.pop(name, None)
    plugins._loaded.clear()
    plugins._failed.clear()


def _reason(ref: str) -> str:
    with pytest.raises(UnknownHandler) as exc:
        resolve(ref)
    return str(exc.value)


def test_refused_references_say_why(plugin_dir: Path) -> None:
    assert "not a built-in" in _reason("nonsense")
    assert "does not import: ModuleNotFoundError" in _reason("no_such_pkg.mod:router")
    assert "no_such_dependency_xyz" in _reason("brokenmod:router")
    assert "does not import: SystemExit: 3" in _reason("exitmod:router")
    assert "has no 'nothing'" in _reason("examples.support_bot:nothing")
    assert "is a list, not an aiogram Router" in _reason("examples.support_bot:__all__")
    with pytest.raises(UnknownHandler, match="failed to build: RuntimeError: no database"):
        make_handler("myfactory:broken", HandlerDeps())


def test_a_broken_module_is_imported_once_per_failure_ttl(plugin_dir: Path) -> None:
    _reason("brokenmod:router")
    (plugin_dir / "brokenmod.py").write_text("router = None\n")
    assert "no_such_dependency_xyz" in _reason("brokenmod:router")  # cached failure
    plugins._failed.clear()
    assert "is a NoneType" in _reason("brokenmod:router")


def test_factories_routers_and_entry_points_resolve(plugin_dir: Path) -> None:
    resolve("echo")
    assert type(make_handler("myfactory:make", HandlerDeps())).__name__ == "EchoHandler"
    assert plugins.load(REF).kind == "router"
    assert ("support", f"entry point: {REF}") in available()
    assert plugins.load("support").kind == "router"
    # one Dispatcher per reference per worker, shared by its bots
    a, b = make_handler(REF, HandlerDeps()), make_handler(REF, HandlerDeps())
    assert a is not b and a._dp is b._dp  # type: ignore[attr-defined]


def test_plugin_settings_follow_the_module_model_or_take_any_object(plugin_dir: Path) -> None:
    assert check_settings(REF, {"greeting": "Hi", "ratelimit": {"per_bot": {"limit": 5}}}) == []
    assert check_settings(REF, {"greeting": 5})[0].startswith("greeting: input should be")
    assert check_settings(REF, {"colour": "red"})[0].startswith("colour: unknown setting")
    assert check_settings("myfactory:make", {"anything": {"goes": [1]}}) == []
    deep: dict[str, object] = {}
    for _ in range(20):
        deep = {"x": deep}
    assert "nested deeper" in check_settings("myfactory:make", deep)[0]
    assert "bytes of JSON" in check_settings("myfactory:make", {"big": "x" * 70_000})[0]


async def test_preload_imports_off_the_loop_once_and_never_raises(plugin_dir: Path) -> None:
    import asyncio
    import threading

    (plugin_dir / "slowmod.py").write_text(
        "import threading\nIMPORTED_IN = threading.current_thread()\n"
        "def make(deps):\n    return None\n"
    )
    try:
        await asyncio.gather(*(plugins.preload("slowmod:make") for _ in range(10)))
        await plugins.preload("brokenmod:router")  # cached failure, no exception
        module = sys.modules["slowmod"]
        assert module.IMPORTED_IN is not threading.main_thread()
        assert plugins.load("slowmod:make").kind == "factory"
        with pytest.raises(UnknownHandler, match="no_such_dependency_xyz"):
            make_handler("brokenmod:router", HandlerDeps())
    finally:
        sys.modules.pop("slowmod", None)
