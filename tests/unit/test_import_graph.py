"""The import graph of the runtime, computed from the AST: layers run one way, no cycles.

Every import counts, including those inside functions and under TYPE_CHECKING: a lazy or
type-only import still means two modules know each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("supervisor", "bots", "context", "ratelimit", "ipc", "config")
PACKAGES = (*RUNTIME, "emulators")
#: A module may import only its own package or packages of a lower rank.
RANK = {"supervisor": 5, "bots": 4, "context": 3, "ratelimit": 3, "ipc": 2, "config": 1}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _resolve(base: str, names: list[str], modules: dict[str, Path]) -> set[str]:
    """`from base import a, b`: a submodule where one exists, else the module itself."""
    hits = {f"{base}.{n}" for n in names if f"{base}.{n}" in modules}
    return hits if len(hits) == len(names) else hits | {base}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                deps |= _resolve(base, [a.name for a in node.names], modules)
        graph[name] = {d for d in deps if d.split(".")[0] in PACKAGES and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_the_tree() -> None:
    graph = import_graph()
    assert "bots.actor.actor" in graph
    assert "bots.telegram.api" in graph["bots.actor.actor"]  # the checker sees real edges


def test_no_import_cycles() -> None:
    assert _cycles(import_graph()) == []


def test_imports_run_one_way() -> None:
    upward = [
        f"{src} -> {dst}"
        for src, deps in import_graph().items()
        if src.split(".")[0] in RANK
        for dst in deps
        if (a := src.split(".")[0]) != (b := dst.split(".")[0])
        and (b not in RANK or RANK[b] >= RANK[a])
    ]
    assert upward == []


def test_the_runtime_never_imports_the_emulators() -> None:
    graph = import_graph()
    offenders = [
        f"{src} -> {dst}"
        for src, deps in graph.items()
        if src.split(".")[0] in RUNTIME
        for dst in deps
        if dst.split(".")[0] == "emulators"
    ]
    assert offenders == []
    # and the emulators stand alone: no runtime module behind a test double
    assert [
        d
        for s, ds in graph.items()
        if s.startswith("emulators")
        for d in ds
        if d.split(".")[0] in RUNTIME
    ] == []


def test_cycle_checker_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.timeout(60)
def test_an_echo_worker_never_imports_openai() -> None:
    """Everything a worker imports, an echo handler built and called, and an LLM client
    configured (as when `[openai]` is set) but unused: `openai` stays unimported."""
    code = """
import asyncio, sys
import supervisor.worker.process
from bots.handlers.registry import make_handler
from bots.llm.service import open_llm
from config.sections.services import OpenAISection

async def main():
    async with open_llm(OpenAISection(base_url="http://127.0.0.1:9/v1")) as llm:
        assert llm is not None
        make_handler("echo")
    print("openai" in sys.modules, "supervisor.worker.process" in sys.modules)

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
