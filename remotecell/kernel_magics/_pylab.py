"""``%pylab`` in a remote cell binds its names in the notebook, as it does in a local cell.

The runner's ``%pylab`` fills the runner's namespace (and its ``user_ns_hidden``) with
NumPy's and matplotlib's names. Those are the libraries' own objects, so rather than
bringing ~1000 of them back by value (some do not even unpickle: matplotlib's
``rcParamsOrig``), the kernel binds the same names from its own copies of the
libraries, in ``user_ns`` and ``user_ns_hidden`` as ``InteractiveShell.enable_pylab``
does, without switching the kernel's matplotlib backend. Names the cell binds after
its ``%pylab`` come back as any other and replace these.
"""

from __future__ import annotations

from typing import Any


def bind(shell: Any, lines: tuple[str, ...]) -> None:
    """Binds what ``%pylab LINE`` binds, for each of ``lines``, in ``shell``'s namespace."""
    from IPython.core.pylabtools import import_pylab

    for line in lines:
        ns: dict[str, Any] = {}
        import_pylab(ns, import_all="--no-import-all" not in line.split())
        ns.pop("__builtins__", None)
        shell.user_ns.update(ns)
        shell.user_ns_hidden.update(ns)
