"""Widgets a remote cell makes, shown and driven in the notebook.

Each comm the runner opens (a ``comm`` event: an ipywidgets widget, a tqdm bar) is
opened here too, with the same id, target and data, through the kernel's own comm
manager (``comm.create_comm``), so the front end renders it as a local widget; the
runner's later messages go to the front end on it. What the front end sends on it (a
slider moved) goes to the runner with ``SendComm``, and what the widget sends back and
its callbacks print (``interact``) is published here as part of the message's handling,
as a local kernel would. After a job without ``session=`` the runner has gone on: the
widget keeps its last state and says once that it is static now.
"""

from __future__ import annotations

import json
import sys

from remotecell._proto import pb
from remotecell.client import Client
from remotecell.contract import comms as rules
from remotecell.contract.errors import RemoteCellError
from remotecell.kernel_magics import _widgets

#: Jobs whose widgets were said to be static.
_static: set[str] = set()


def receive(client: Client, event: pb.JobEvent) -> None:
    """Carries out the runner's ``comm`` event here: opens, updates or closes the comm."""
    message = event.comm
    data = _in_notebook(rules.data(message))
    metadata = rules.metadata(message)
    buffers = list(message.buffers)
    if message.kind == pb.CommMessage.OPEN:
        import comm

        try:
            opened = comm.create_comm(
                target_name=message.target_name,
                data=data,
                metadata=metadata,
                buffers=buffers,
                comm_id=message.comm_id,
                target_module=message.target_module or None,
            )
        except Exception as err:  # a kernel without comms: the cell's text stays
            print(f"remotecell: a remote widget could not be shown here: {err}", file=sys.stderr)
            return
        job_id, comm_id = event.job_id, message.comm_id
        opened.on_msg(lambda msg: _to_runner(client, job_id, comm_id, "comm_msg", msg))
        opened.on_close(lambda msg: _to_runner(client, job_id, comm_id, "comm_close", msg))
        _widgets.opened[comm_id] = (job_id, opened)
        return
    found = _widgets.opened.get(message.comm_id)
    if found is None:
        return
    if message.kind == pb.CommMessage.CLOSE:
        del _widgets.opened[message.comm_id]
        found[1].close(data=data, metadata=metadata, buffers=buffers)
    else:
        found[1].send(data=data, metadata=metadata, buffers=buffers)
        _widgets.runner_sent(message.comm_id, data)


def _to_runner(client: Client, job_id: str, comm_id: str, msg_type: str, msg: dict) -> None:
    """Sends the front end's message on ``comm_id`` to the runner and shows its answer."""
    if msg_type == "comm_close":
        _widgets.opened.pop(comm_id, None)
    if job_id in _static:
        return
    content = msg.get("content", {})
    try:
        message = rules.to_proto(
            msg_type, comm_id, content.get("data"), msg.get("metadata"), msg.get("buffers")
        )
        events = client.send_comm(job_id, message)
    except (RemoteCellError, rules.CommTooLarge) as err:
        _static.add(job_id)
        if comm_id not in _widgets.here:  # a widget bound here lives on in the notebook
            print(f"remotecell: {err}", file=sys.stderr)
        return
    for event in events:
        _show(client, event)


def _show(client: Client, event: pb.JobEvent) -> None:
    kind = event.WhichOneof("body")
    if kind == "comm":
        receive(client, event)
    elif kind == "stream":
        out = sys.stdout if event.stream.name == pb.Stream.STDOUT else sys.stderr
        out.write(event.stream.text)
        out.flush()
    elif kind == "display":
        _show_display(event.display)


def _show_display(display: pb.Display) -> None:
    """A callback's display (an ``interact`` plot), as ``_execution`` shows a cell's."""
    from IPython.display import clear_output, publish_display_data

    if display.clear:
        clear_output(wait=display.clear_wait)
        return
    transient = {"display_id": display.display_id} if display.display_id else None
    publish_display_data(
        json.loads(display.data_json or "{}"),
        json.loads(display.metadata_json or "{}"),
        transient=transient,
        update=bool(display.display_id and display.update),
    )


def _in_notebook(data: dict) -> dict:
    """``data`` with the runner's stand-in for the request an Output widget captures
    under replaced by the request this kernel handles now."""
    state = data.get("state")
    if isinstance(state, dict) and state.get("msg_id") == rules.PARENT_MSG_ID:
        state["msg_id"] = _parent_msg_id()
    return data


def _parent_msg_id() -> str:
    from IPython import get_ipython

    shell = get_ipython()
    get_parent = getattr(shell, "get_parent", None)
    parent = get_parent() if get_parent is not None else getattr(shell, "parent_header", {})
    return str((parent or {}).get("header", {}).get("msg_id", ""))
