"""The package's import graph (every import, including those inside functions) has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "trainer"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import common`
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "trainer.engine.loop" in graph["trainer.runner"]
    assert "trainer.modes.common" in graph["trainer.modes.addift"]  # `from . import common`


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def _top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_webui_hosts_import_the_webui():
    """forge-api.md F9: Forge is told apart by host/detect.py, which only looks packages up; its `backend` and
    `modules_forge` are imported by the Forge Neo host alone, the webuis' `modules` by the webui hosts alone."""
    hosts = {"trainer.host.webui", "trainer.host.webui_generate", "trainer.host.forge", "trainer.host.forge_classic",
             "trainer.host.detect"}
    allowed = {"modules": hosts, "networks": {"trainer.host.webui", "trainer.host.forge"},
               "backend": {"trainer.host.forge"}, "modules_forge": {"trainer.host.forge"}, "ldm_patched": set()}
    seen = {name: set() for name in allowed}
    for path in sorted(ROOT.rglob("*.py")):
        for name in _top_level_imports(path) & set(allowed):
            seen[name].add(module_name(path))
    assert {n: m - allowed[n] for n, m in seen.items() if m - allowed[n]} == {}
    assert seen["backend"] == {"trainer.host.forge"}  # the check sees imports inside functions
