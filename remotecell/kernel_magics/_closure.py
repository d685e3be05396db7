"""Which notebook names a cell needs, and which names it binds.

Both come from the cell's symbol table (``symtable``), after IPython has turned its
``!cmd`` and ``%magic`` lines into Python:

* *free names*: names the cell reads at top level, plus names that functions, lambdas
  and classes inside it read as globals. Those bound in the notebook travel with the
  cell (``x = x + 1`` reads ``x``, so ``x`` travels).
* *assigned names*: names the cell binds at top level (assignments, ``for`` and
  ``with`` targets, imports, ``def`` and ``class``); by default they come back.
"""

from __future__ import annotations

import builtins
import re
import symtable
from dataclasses import dataclass
from typing import Any

_IPYTHON_NAMES = re.compile(r"^(_+|_i+|_i\d+|_\d+|_oh|_ih|_dh|In|Out|get_ipython|exit|quit)$")


@dataclass(frozen=True)
class CellNames:
    free: tuple[str, ...]
    assigned: tuple[str, ...]


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
                if sym.is_referenced() and sym.is_global() and not sym.is_declared_global():
                    free.setdefault(sym.get_name(), None)
                elif sym.is_declared_global():
                    free.setdefault(sym.get_name(), None)
                    if sym.is_assigned():
                        assigned.setdefault(sym.get_name(), None)
            nested(child)

    nested(table)
    return CellNames(tuple(free), tuple(assigned))


def capture(
    names: CellNames, user_ns: dict[str, Any], hidden: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The notebook's values for the cell's free names (builtins and IPython's own left out)."""
    hidden = hidden or {}
    out: dict[str, Any] = {}
    for name in names.free:
        if name not in user_ns or _IPYTHON_NAMES.match(name):
            continue
        value = user_ns[name]
        if name in hidden and hidden[name] is value:
            continue
        if getattr(builtins, name, _MISSING) is value:
            continue
        out[name] = value
    return out


_MISSING = object()


def is_ipython_name(name: str) -> bool:
    """IPython's own names (``_``, ``_i3``, ``Out``, ...), which never travel."""
    return bool(_IPYTHON_NAMES.match(name))
