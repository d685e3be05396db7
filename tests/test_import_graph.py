"""The package's import graph: no cycles at load time, and the layering DESIGN.md asks for.

The graph is built from the source (``ast``), not by importing anything. An import counts
as *load-time* when it runs while its module is being imported: any import statement
outside a function body, except under ``if TYPE_CHECKING:``. Importing ``a.b.c`` also
runs the packages ``a`` and ``a.b`` (those the importer is not itself inside), so those
count as its targets too. Imports inside functions are *lazy*: they cannot make a
module's import fail halfway, but they are still dependencies, so the layering rules
look at them as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import remotecell

ROOT = Path(remotecell.__file__).resolve().parent
PACKAGE = "remotecell"


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    kind: str  # "load": runs at import time; "lazy": inside a function; "typing": TYPE_CHECKING

    def where(self) -> str:
        path = _modules()[self.importer][0].relative_to(ROOT.parent)
        return f"{path}:{self.line}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


_CACHE: dict[str, tuple[Path, bool]] = {}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: its file, and whether it is a package."""
    if not _CACHE:
        for path in sorted(ROOT.rglob("*.py")):
            _CACHE[_module_name(path)] = (path, path.name == "__init__.py")
        # Directories without an __init__.py are namespace packages: importable, no code.
        for path in sorted(ROOT.rglob("*")):
            if path.is_dir() and "__pycache__" not in path.parts:
                _CACHE.setdefault(_module_name(path / "__init__.py"), (path, True))
    return _CACHE


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], kind: str) -> Iterator[tuple[ast.stmt, str]]:
    """Import statements in ``body`` with how they run (see ``Import.kind``)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, kind
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _statements(node.body, "lazy" if kind == "load" else kind)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.body, "typing")
            yield from _statements(node.orelse, kind)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None) or []
                for child in children:
                    if isinstance(child, ast.ExceptHandler | ast.match_case):
                        yield from _statements(child.body, kind)
                if children and isinstance(children[0], ast.stmt):
                    yield from _statements(children, kind)


def _resolve(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package's modules that ``node`` in ``importer`` imports (deepest first)."""
    modules = _modules()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = importer if modules[importer][1] else importer.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        # `from a import b`: b is a submodule of a, or a name defined in a.
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in node.names
        ]
    found: list[str] = []
    for name in names:
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            continue
        while name not in modules:  # `import a.b.c` where c is not a module (rare)
            name = name.rpartition(".")[0]
        # Importing a.b.c runs a and a.b first, unless the importer is inside them already.
        parts = name.split(".")
        for depth in range(len(parts), 0, -1):
            target = ".".join(parts[:depth])
            if importer == target or importer.startswith(target + "."):
                break
            if target not in found:
                found.append(target)
    return found


_IMPORTS: list[Import] = []


def imports() -> list[Import]:
    if not _IMPORTS:
        for name, (path, _) in _modules().items():
            if path.is_dir():
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node, kind in _statements(tree.body, "load"):
                assert isinstance(node, ast.Import | ast.ImportFrom)
                for target in _resolve(name, node):
                    if target != name:
                        _IMPORTS.append(Import(name, target, node.lineno, kind))
    return _IMPORTS


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(sorted(component))
    return found


def _a_cycle(component: list[str], edges: dict[tuple[str, str], Import]) -> list[Import]:
    """One cycle through the component's first module, as the imports that make it."""
    members = set(component)
    start = component[0]
    came_from: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for (a, b), imp in sorted(edges.items()):
                if a != node or b not in members:
                    continue
                if b == start:
                    path = [imp]
                    while path[0].importer != start:
                        path.insert(0, came_from[path[0].importer])
                    return path
                if b not in came_from:
                    came_from[b] = imp
                    following.append(b)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def cycles(kinds: tuple[str, ...]) -> list[list[Import]]:
    """One cycle per strongly connected component (of more than one module) of the graph
    of the imports of these kinds."""
    edges = {(i.importer, i.target): i for i in imports() if i.kind in kinds}
    graph: dict[str, set[str]] = {name: set() for name in _modules()}
    for a, b in edges:
        graph[a].add(b)
    return [
        _a_cycle(component, edges) for component in strongly_connected(graph) if len(component) > 1
    ]


def describe(cycle: list[Import]) -> str:
    steps = "\n".join(f"    {i.importer} -> {i.target}  ({i.kind}, {i.where()})" for i in cycle)
    return f"  {cycle[0].importer} imports itself, through:\n{steps}"


def test_no_module_imports_itself_at_load_time():
    found = cycles(("load",))
    assert not found, "import cycles at load time:\n" + "\n".join(map(describe, found))


def test_no_module_imports_itself_through_lazy_imports_either():
    # An import inside a function cannot break a module's import halfway, but a cycle
    # through one still ties the modules together: none of them loads without the others.
    found = cycles(("load", "lazy"))
    assert not found, "import cycles through lazy imports:\n" + "\n".join(map(describe, found))


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    components = sorted(c for c in strongly_connected(graph) if len(c) > 1)
    assert components == [["a", "b", "c"]]


def _importing(prefixes: tuple[str, ...], forbidden: str) -> list[str]:
    return [
        f"{i.importer} imports {i.target} ({i.kind}, {i.where()})"
        for i in imports()
        if any(i.importer == p or i.importer.startswith(p + ".") for p in prefixes)
        and (i.target == forbidden or i.target.startswith(forbidden + "."))
    ]


def test_the_runner_imports_nothing_from_the_executors():
    # DESIGN.md: the runner owns its launch contract and imports nothing from executors.
    found = _importing(("remotecell.backend.runner",), "remotecell.backend.executors")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "part", ["remotecell.client", "remotecell.kernel_magics", "remotecell.widgets"]
)
def test_the_notebook_side_imports_nothing_from_the_backend(part):
    found = _importing((part,), "remotecell.backend")
    assert not found, "\n".join(found)


def test_the_graph_sees_imports_of_every_kind():
    # A check on the parser itself: a relative import, a lazy one, one for typing only.
    seen = {(i.importer, i.target, i.kind) for i in imports()}
    assert ("remotecell.backend.executors.local", "remotecell.backend.executors.base", "load") in (
        seen
    )
    assert any(kind == "lazy" for _, _, kind in seen)
    assert any(kind == "typing" for _, _, kind in seen)


def test_starting_a_runner_loads_no_executor_code():
    # The fork server, control groups and psutil's process tables are the control plane's.
    code = (
        "import remotecell.backend.runner._main, sys; "
        "print(sorted(m for m in sys.modules if m.startswith('remotecell.backend.executors')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
