"""ipywidgets travel by reference to their comm: a widget is its class, its model id and
its state, and loads on the other side as a live widget of that class bound to the comm
of the same id that this process already holds (the notebook's kernel opened one for
each widget a runner made; a runner makes one that reaches the notebook's through the
control plane). So ``out = widgets.Output()`` in a remote cell is a real ``Output`` in
the notebook, ``with out:`` in a later cell (local or remote) captures into it, and a
slider moved in the front end reads its new ``value`` on either side.

The widgets a widget's state refers to (``IPY_MODEL_`` ids: children, layout, style)
travel with it and load first, so the references resolve. Where this process holds no
comm for the id (no proxy installed, a kernel that has restarted) the widget loads as a
new widget with the same state. Each side says where its comms are with ``use``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, Protocol

_MODEL_REF = "IPY_MODEL_"


class CommSource(Protocol):
    """Where this process finds the comm of a widget made on the other side."""

    def comm(self, model_id: str) -> Any | None:
        """The comm this process holds (or makes, unopened) for ``model_id``, or None."""

    def bound(self, model_id: str, widget: Any) -> None:
        """Called once ``widget`` is bound to that comm (it has taken the comm's
        message handler)."""


_source: CommSource | None = None


def use(source: CommSource | None) -> None:
    """Widgets loaded in this process from now on bind to ``source``'s comms."""
    global _source
    _source = source


def widget_class() -> type | None:
    """``ipywidgets.Widget`` where ipywidgets is loaded (a value can hold no widget else)."""
    widgets = sys.modules.get("ipywidgets")
    return getattr(widgets, "Widget", None)


def _instances() -> Any:
    from ipywidgets.widgets.widget import _instances

    return _instances


def reduce_widget(widget: Any) -> tuple[Any, ...]:
    """``widget`` as its class, model id, state and the widgets its state refers to."""
    if widget.comm is None:  # closed: nothing to bind to, it travels as a new widget
        return load_widget, (type(widget), "", _state(widget), [])
    state = _state(widget)
    known = _instances()
    refs = [known[ref] for ref in dict.fromkeys(_model_refs(state)) if ref in known]
    return load_widget, (type(widget), widget.model_id, state, refs)


def _state(widget: Any) -> dict[str, Any]:
    # Binary traits (an Image's value) serialise to memoryviews, which do not pickle.
    return {
        key: bytes(value) if isinstance(value, memoryview) else value
        for key, value in widget.get_state().items()
    }


def _model_refs(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value.startswith(_MODEL_REF):
            yield value[len(_MODEL_REF) :]
    elif isinstance(value, dict):
        for item in value.values():
            yield from _model_refs(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _model_refs(item)


def load_widget(cls: type, model_id: str, state: dict[str, Any], refs: list[Any]) -> Any:
    """The widget of ``model_id`` here: the one this process has if its comm is open,
    else a new ``cls`` bound to the comm of that id, with ``state`` (``refs``, loaded
    before it, are what the state's model ids resolve to)."""
    del refs  # loaded first by pickle, so they are in ipywidgets' registry now
    existing = _instances().get(model_id) if model_id else None
    if existing is not None and _is_open(existing.comm):
        set_quietly(existing, state)
        return existing
    comm = _source.comm(model_id) if _source is not None and model_id else None
    if comm is None:
        widget = cls()
        set_quietly(widget, state)
        widget.send_state()
        return widget
    widget = cls(comm=comm)
    set_quietly(widget, state)
    if _source is not None:
        _source.bound(model_id, widget)
    return widget


def _is_open(comm: Any) -> bool:
    return comm is not None and not getattr(comm, "_closed", False)


def set_quietly(widget: Any, state: dict[str, Any]) -> None:
    """Sets ``state`` (JSON form) as ``Widget.set_state`` does for a front end's message,
    without its echo: the other side's front end has this state already."""
    with widget._lock_property(**state), widget.hold_trait_notifications():
        for name, value in state.items():
            if name in widget.keys:
                from_json = widget.trait_metadata(name, "from_json", widget._trait_from_json)
                widget.set_trait(name, from_json(value, widget))
