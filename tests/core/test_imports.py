"""The omniq package's modules import each other without a cycle.

The graph is read from the source with ``ast``. Imports under ``if
TYPE_CHECKING:`` never count (they never run). The first test counts the
imports that run when a module is imported (module level, class bodies,
``if``/``try`` blocks); the second counts those inside functions too, which
is where the seed project hid its app <-> worker cycle (``app.worker()``
imported the pool, the pool imported the app for ``error_from_exception``):
the worker and the task handles now never import the app at all.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import omniq

ROOT = Path(omniq.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = ["omniq", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], in_functions: bool) -> Iterator[ast.stmt]:
    """The statements that can run (at import, or also in functions), never those under TYPE_CHECKING."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not in_functions:
            continue
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _statements(node.body, in_functions)
            yield from _statements(node.orelse, in_functions)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _statements(block, in_functions)
        elif isinstance(node, (ast.ClassDef, ast.With, ast.AsyncWith, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _statements(node.body, in_functions)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            yield from _statements([*node.body, *node.orelse], in_functions)


def _imports(name: str, path: Path, modules: dict[str, Path], in_functions: bool = False) -> set[str]:
    """The omniq modules ``name`` imports (at import time; with ``in_functions``, in its functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _statements(ast.parse(path.read_text(), str(path)).body, in_functions):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_omniq_package_has_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "omniq.app" in graph and "omniq.worker.pool" in graph
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_cycle_even_counting_imports_inside_functions() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules, in_functions=True) for name, path in modules.items()}
    assert "omniq.worker.pool" in graph["omniq.app"]  # app.worker() imports the pool on use: one way only
    for name in [m for m in graph if m.startswith("omniq.worker")] + ["omniq._tasks", "omniq._producer"]:
        assert "omniq.app" not in graph[name], name
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_function_level_and_type_checking_imports_do_not_count(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import omniq.models\n"
        "if TYPE_CHECKING:\n    from omniq.app import AsyncOmniQ\n"
        "def f():\n    from omniq import sync\n"
        "class C:\n    from omniq import errors\n"
    )
    modules = _modules()
    assert _imports("omniq.fake", source, modules) == {"omniq.models", "omniq.errors"}
    assert _imports("omniq.fake", source, modules, in_functions=True) == {"omniq.models", "omniq.errors", "omniq.sync"}
