"""The notebook's side of widgets that travel by reference (``contract._widgets``): a
widget made in a remote cell loads here bound to the comm this kernel opened for it
(``_comms``), so it is a live widget of the notebook. What the front end sends on that
comm now reaches the widget here and still goes to the runner; what the runner sends
on it updates the widget here as well as the front end.
"""

from __future__ import annotations

from typing import Any

from remotecell.contract import _widgets as travel

#: The widgets bound to a remote cell's comm, by comm id.
here: dict[str, Any] = {}
#: What each such comm did with the front end's messages before its widget took them.
_forward: dict[str, Any] = {}
#: The comms opened for remote cells, by id: (job id, the kernel's comm); ``_comms``
#: fills it, and it lives here so this module need not import that one.
opened: dict[str, tuple[str, Any]] = {}


class KernelComms:
    """Finds the comms this kernel opened for remote cells (``travel.CommSource``)."""

    def comm(self, model_id: str) -> Any | None:
        found = opened.get(model_id)
        if found is None:
            return None
        _forward[model_id] = found[1]._msg_callback
        return found[1]

    def bound(self, model_id: str, widget: Any) -> None:
        forward = _forward.pop(model_id, None)
        here[model_id] = widget
        handle = widget._handle_msg

        def both(msg: dict) -> None:
            handle(msg)
            if forward is not None:
                forward(msg)

        widget.comm.on_msg(both)


def runner_sent(comm_id: str, data: dict) -> None:
    """Keeps the widget bound to ``comm_id`` (if any) in step with the runner's update."""
    widget = here.get(comm_id)
    state = data.get("state")
    if widget is None or data.get("method") != "update" or not isinstance(state, dict):
        return
    if data.get("buffer_paths"):  # binary parts travel as buffers: the front end has them
        return
    if widget.comm is None:
        here.pop(comm_id, None)
        return
    travel.set_quietly(widget, state)


travel.use(KernelComms())
