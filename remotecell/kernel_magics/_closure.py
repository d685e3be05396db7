"""Which notebook names a cell needs, and which names it binds.

Both come from the cell's symbol table (``symtable``), after IPython has turned its
``!cmd`` and ``%magic`` lines into Python:

* *free names*: names the cell reads at top level, plus names that functions, lambdas
  and classes inside it read as globals. Those bound in the notebook travel with the
  cell (``x = x + 1`` and ``x += 1`` read ``x``, so ``x`` travels).
* *assigned names*: names the cell binds at top level (assignments, ``for`` and
  ``with`` targets, imports, ``def`` and ``class``); by default they come back.

IPython syntax hides Python in strings, which the symbol table cannot see: the code of
``%time``, ``%timeit``, ``%prun`` and ``%%capture``, and the ``$name`` and ``{expr}``
that IPython expands in ``!cmd`` and magic lines. Those are analysed too.
"""

from __future__ import annotations

import ast
import builtins
import re
import symtable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_IPYTHON_NAMES = re.compile(
    r"^(_+|_i+|_i\d+|_\d+|_oh|_ih|_dh|_exit_code|In|Out|get_ipython|exit|quit)$"
)
# The notebook module's own attributes: the runner's namespace has its own.
_MODULE_NAMES = frozenset(
    {
        "__name__",
        "__doc__",
        "__builtins__",
        "__builtin__",
        "__loader__",
        "__spec__",
        "__package__",
        "__file__",
        "__cached__",
    }
)
# Magics whose argument is Python code run in the notebook's namespace, and whether
# the names that code binds stay bound (``%timeit`` runs it inside a function).
_CODE_MAGICS = {"time": True, "prun": True, "timeit": False, "capture": True}


@dataclass(frozen=True)
class CellNames:
    free: tuple[str, ...]
    assigned: tuple[str, ...]
    #: The cell has a star import: the names it binds are known only after it ran.
    star: bool = False
    #: The lines of the cell's ``%pylab`` magics.
    pylab: tuple[str, ...] = ()


def python_source(cell: str, shell: Any | None) -> str:
    """The cell as Python: IPython syntax (``!ls``, ``%time``) transformed."""
    return shell.transform_cell(cell) if shell is not None else cell


def analyse(source: str) -> CellNames:
    """Free and assigned names of Python source (raises SyntaxError like Python would)."""
    table = symtable.symtable(source, "<cell>", "exec")
    free: dict[str, None] = {}
    assigned: dict[str, None] = {}
    for sym in table.get_symbols():
        if sym.is_referenced():
            free[sym.get_name()] = None
        if sym.is_assigned() or sym.is_imported() or sym.is_namespace():
            assigned[sym.get_name()] = None

    def nested(tab: symtable.SymbolTable) -> None:
        for child in tab.get_children():
            for sym in child.get_symbols():
                if sym.is_global() and sym.is_referenced():
                    free.setdefault(sym.get_name(), None)
                if sym.is_declared_global() and sym.is_assigned():
                    assigned.setdefault(sym.get_name(), None)
            nested(child)

    nested(table)
    tree = ast.parse(source)
    for name in _read_by_binding(tree):
        free.setdefault(name, None)
    star = any(
        isinstance(node, ast.ImportFrom) and node.names[0].name == "*" for node in ast.walk(tree)
    )
    pylab: tuple[str, ...] = ()
    for inner in _embedded(tree):
        for name in inner.free:
            free.setdefault(name, None)
        for name in inner.assigned:
            assigned.setdefault(name, None)
        star = star or inner.star
        pylab += inner.pylab
    return CellNames(tuple(free), tuple(assigned), star, pylab)


def capture(names: CellNames, user_ns: dict[str, Any]) -> dict[str, Any]:
    """The notebook's values for the cell's free names (builtins and IPython's own left out).

    Names hidden from ``%who`` travel too: ``%pylab`` hides ``np``, ``plt`` and the rest.
    """
    out: dict[str, Any] = {}
    for name in names.free:
        if name not in user_ns or is_ipython_name(name):
            continue
        value = user_ns[name]
        if getattr(builtins, name, _MISSING) is value:
            continue
        out[name] = value
    return out


_MISSING = object()


def is_ipython_name(name: str) -> bool:
    """IPython's own names (``_``, ``_i3``, ``Out``, ``__name__``, ...), which never travel."""
    return name in _MODULE_NAMES or bool(_IPYTHON_NAMES.match(name))


def _read_by_binding(tree: ast.Module) -> Iterator[str]:
    """Global names that ``x += 1`` and ``del x`` read: the symbol table counts them as
    bound only, yet each fails unless ``x`` is already bound."""

    def scan(node: ast.AST, declared: set[str] | None) -> Iterator[str]:
        # declared: the names a function declares global; None where every name not bound
        # yet falls back to the globals (the cell's top level, class bodies)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                globals_ = {
                    n for g in ast.walk(child) if isinstance(g, ast.Global) for n in g.names
                }
                yield from scan(child, globals_)
                continue
            if isinstance(child, ast.ClassDef):
                yield from scan(child, None)
                continue
            targets: list[ast.expr] = []
            if isinstance(child, ast.AugAssign):
                targets = [child.target]
            elif isinstance(child, ast.Delete):
                targets = child.targets
            for target in targets:
                if isinstance(target, ast.Name) and (declared is None or target.id in declared):
                    yield target.id
            yield from scan(child, declared)

    return scan(tree, None)


def _embedded(tree: ast.Module) -> Iterator[CellNames]:
    """The names of the Python that IPython syntax carries in strings."""
    for node in ast.walk(tree):
        call = _ipython_call(node)
        if call is None:
            continue
        method, args = call
        if method in ("system", "getoutput") and args:
            yield _expanded(args[0])
        elif method == "run_line_magic" and len(args) == 2:
            magic, line = args
            if magic == "pylab":  # the kernel binds its names itself (_pylab.py)
                yield CellNames((), (), pylab=(line,))
            elif magic in _CODE_MAGICS:
                yield _code_names(_strip_options(line), _CODE_MAGICS[magic])
            else:
                yield _expanded(line)
        elif method == "run_cell_magic" and len(args) == 3:
            magic, line, body = args
            if magic in _CODE_MAGICS:
                yield _code_names(body, _CODE_MAGICS[magic])
                if magic == "capture":  # %%capture [--options] [name]: binds name
                    names = [w for w in line.split() if not w.startswith("-")]
                    yield CellNames((), tuple(names[:1]))
                else:  # %%timeit's line is setup code
                    yield _code_names(_strip_options(line), _CODE_MAGICS[magic])
            else:
                yield _expanded(line)


def _ipython_call(node: ast.AST) -> tuple[str, list[str]] | None:
    """``get_ipython().method("a", "b")`` -> ``("method", ["a", "b"])``."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "get_ipython"
    ):
        return None
    args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return node.func.attr, args


def _code_names(code: str, keeps_bindings: bool) -> CellNames:
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        names = analyse(TransformerManager().transform_cell(code))
    except SyntaxError:  # the runner reports it, as IPython would
        return CellNames((), ())
    return names if keeps_bindings else CellNames(names.free, ())


def _strip_options(line: str) -> str:
    """The code of a magic line after its options (``-n 10 f(x)`` -> ``f(x)``)."""
    words = line.split()
    for start in range(len(words)):
        code = " ".join(words[start:])
        try:
            ast.parse(code)
        except SyntaxError:
            continue
        return code
    return ""


def _expanded(text: str) -> CellNames:
    """The names read by the ``$name`` and ``{expr}`` IPython expands in ``text``."""
    from IPython.utils.text import DollarFormatter

    free: dict[str, None] = {}
    try:
        fields = [(f, spec) for _, f, spec, _ in DollarFormatter().parse(text) if f]
    except ValueError:  # IPython leaves such a command as it is
        return CellNames((), ())
    for field, spec in fields:
        names = _code_names(f"{field}:{spec}" if spec else field, keeps_bindings=False)
        free.update(dict.fromkeys(names.free))
    return CellNames(tuple(free), ())
