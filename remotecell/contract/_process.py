"""Objects that stand for the process they live in travel as a reference to the other
side's own: the IPython shell (``get_ipython()``, and so ``get_ipython`` itself, a method
bound to it, and ``exit``), its display publisher and display hook, ``sys.stdout`` and
``sys.stderr``. A function defined on the runner that calls ``get_ipython()`` comes back
and calls the notebook's shell; one given ``file=sys.stderr`` writes to the notebook's.

The streams load as a ``ProcessStream``, which writes to whatever ``sys.stdout`` (or
``sys.stderr``) is when it is written to: a runner gives each cell a stream of its own,
and a value loaded in one cell of a session is written to in later ones.

A display handle travels as its display id, so ``h.update(y)`` on either side updates
the output that ``display(x, display_id=True)`` made on the other (the runner sends its
displays with their ids, and the notebook publishes them under the same ids).

``values._Pickler`` looks up each object no other rule took in ``known_objects`` (the
ids of this process's objects when it started): a name found there is pickled as
``process_object(name)``. Its reducers by type (``type_reducers``) join ``REDUCERS``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: The streams that travel by reference, by their names in ``sys``.
STREAMS = ("stdout", "stderr")
#: The shell's parts that travel by reference, by their attribute names on the shell.
SHELL_PARTS = ("display_pub", "displayhook")


def _shell() -> Any:
    """This process's IPython shell, or None (a plain Python process, no IPython loaded)."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython() if get_ipython is not None else None


def known_objects() -> dict[int, str]:
    """This process's objects that travel by reference, by id: their names."""
    found: dict[int, str] = {}
    for name in STREAMS:
        stream = getattr(sys, name, None)
        if stream is not None:
            found[id(stream)] = name
    shell = _shell()
    if shell is not None:
        found[id(shell)] = "shell"
        for part in SHELL_PARTS:
            obj = getattr(shell, part, None)
            if obj is not None:
                found[id(obj)] = part
        # The one bound method that a namespace's `get_ipython` is, which functions use:
        # as IPython's own function it loads also where there is no shell (a script).
        get_ipython = getattr(shell, "user_ns", {}).get("get_ipython")
        if get_ipython is not None:
            found[id(get_ipython)] = "get_ipython"
    return found


def type_reducers() -> dict[type, Callable[[Any], Any]]:
    """Reducers by exact type, to add to ``_by_value.REDUCERS``: a display handle's."""
    ipython_display = sys.modules.get("IPython.display")  # loaded with any part of IPython
    handle = getattr(ipython_display, "DisplayHandle", None)
    return {} if handle is None else {handle: lambda h: (display_handle, (h.display_id,))}


def process_object(name: str) -> Any:
    """This process's own object called ``name``: its shell or a part of it (None where
    there is no IPython shell), ``get_ipython``, or a ``ProcessStream``."""
    if name in STREAMS:
        return ProcessStream(name)
    if name == "get_ipython":
        from IPython import get_ipython

        return get_ipython
    shell = _shell()
    if name == "shell" or shell is None:
        return shell
    return getattr(shell, name)


def display_handle(display_id: str) -> Any:
    from IPython.display import DisplayHandle

    return DisplayHandle(display_id)


class ProcessStream:
    """``sys.stdout`` or ``sys.stderr`` of this process, whichever object that is when
    it is written to."""

    def __init__(self, name: str) -> None:
        if name not in STREAMS:
            raise ValueError(f"not a stream that travels by reference: {name!r}")
        self.name = name

    def write(self, text: str) -> int:
        written: int = getattr(sys, self.name).write(text)
        return written

    def flush(self) -> None:
        getattr(sys, self.name).flush()

    def __getattr__(self, attribute: str) -> Any:  # encoding, isatty(), fileno(), ...
        if attribute.startswith("__") or attribute == "name":
            raise AttributeError(attribute)
        return getattr(getattr(sys, self.name), attribute)

    def __reduce__(self) -> tuple[Any, ...]:
        return process_object, (self.name,)

    def __repr__(self) -> str:
        return f"<ProcessStream sys.{self.name}>"
