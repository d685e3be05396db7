"""ipywidgets made in a remote cell render and update in the notebook, and what the front
end sends them reaches the runner: a real Jupyter kernel, whose client plays the front
end (it reads the kernel's comm messages and sends ``comm_msg`` on the shell channel)."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest
from support import Execution

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError, JobNotFoundError, RemoteCellError

pytestmark = pytest.mark.kernel


def _opened(execution: Execution, model: str) -> dict[str, Any]:
    """The ``comm_open`` of the cell's widget of model ``model`` (e.g. IntSliderModel)."""
    for content in execution.of_type("comm_open"):
        if content["data"].get("state", {}).get("_model_name") == model:
            return content
    opened = [c["data"].get("state", {}).get("_model_name") for c in execution.of_type("comm_open")]
    raise AssertionError(f"no {model} was opened in the notebook; opened: {opened}")


def _states(messages: list[dict[str, Any]], comm_id: str) -> list[dict[str, Any]]:
    return [
        m["content"]["data"].get("state", {})
        for m in messages
        if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
    ]


def front_end_sends(kernel: Any, comm_id: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Sends ``comm_msg`` as a front end does when the user moves a widget; returns the
    kernel's iopub messages while it handles it."""
    kc = kernel.kc
    msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
    kc.shell_channel.send(msg)
    msg_id = msg["header"]["msg_id"]
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            got = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if got["parent_header"].get("msg_id") != msg_id:
            continue
        if got["msg_type"] == "status" and got["content"]["execution_state"] == "idle":
            return messages
        messages.append(got)
    raise AssertionError(f"the kernel did not handle the comm_msg; got {messages}")


def _update(**state: Any) -> dict[str, Any]:
    return {"method": "update", "state": state, "buffer_paths": []}


def test_a_remote_slider_moved_in_the_front_end_changes_on_the_session_runner(kernel):
    made = kernel.ok(
        '%%remote session="widgets"\nimport ipywidgets as w\n'
        "slider = w.IntSlider(value=5, max=10)\ndisplay(slider)",
        120,
    )
    opened = _opened(made, "IntSliderModel")
    assert opened["target_name"] == "jupyter.widget"
    assert opened["data"]["state"]["value"] == 5
    views = [c["data"] for c in made.of_type("display_data")]
    assert any(
        d.get("application/vnd.jupyter.widget-view+json", {}).get("model_id") == opened["comm_id"]
        for d in views
    ), views

    front_end_sends(kernel, opened["comm_id"], _update(value=7))

    read = kernel.ok('%%remote session="widgets"\nprint(slider.value)', 120)
    assert read.stdout.strip() == "7", read.stdout + read.stderr


def test_an_output_widget_captures_the_remote_cells_print(kernel):
    result = kernel.ok(
        "%%remote\nimport ipywidgets as w\nout = w.Output()\ndisplay(out)\n"
        'with out:\n    print("inside the widget")\nprint("after")',
        120,
    )
    opened = _opened(result, "OutputModel")
    parent = result.messages[0]["parent_header"]["msg_id"]
    # The front end captures the output of the request the widget names: the cell's.
    msg_ids = [s["msg_id"] for s in _states(result.messages, opened["comm_id"]) if "msg_id" in s]
    assert msg_ids == [parent, ""], msg_ids
    kinds = [
        (m["msg_type"], m["content"].get("text") or m["content"].get("data", {}).get("state"))
        for m in result.messages
        if m["msg_type"] in ("stream", "comm_msg")
    ]
    inside = kinds.index(("stream", "inside the widget\n"))
    assert kinds[inside - 1] == ("comm_msg", {"msg_id": parent}), kinds
    assert kinds[inside + 1] == ("comm_msg", {"msg_id": ""}), kinds
    assert "after" in result.stdout


def test_a_tqdm_notebook_bar_in_a_remote_loop_ends_at_100_percent(kernel):
    result = kernel.ok(
        "%%remote\nfrom tqdm.notebook import tqdm\nimport time\n"
        "for i in tqdm(range(20)):\n    time.sleep(0.01)",
        120,
    )
    bar = _opened(result, "FloatProgressModel")
    assert bar["data"]["state"]["max"] == 20
    values = [s["value"] for s in _states(result.messages, bar["comm_id"]) if "value" in s]
    assert values and values[-1] == 20, values
    texts = [
        s["value"]
        for m in result.of_type("comm_msg")
        for s in [m["data"].get("state", {})]
        if isinstance(s.get("value"), str)
    ]
    assert any(t.startswith("100%") for t in texts), texts
    assert "IProgress not found" not in result.stderr


def test_interact_calls_back_into_the_session_runner_after_the_cell(kernel):
    made = kernel.ok(
        '%%remote session="interact"\nfrom ipywidgets import interact\n'
        "@interact(x=3)\ndef show(x):\n    print('x is', x * 10)",
        120,
    )
    assert "x is 30" in made.stdout  # the first call, as the cell ran
    slider = _opened(made, "IntSliderModel")

    handled = front_end_sends(kernel, slider["comm_id"], _update(value=4))

    streams = [m["content"]["text"] for m in handled if m["msg_type"] == "stream"]
    assert "x is 40\n" in streams, handled
    # The interact's Output widget captures the callback's print: it names the front
    # end's message being handled.
    parent = handled[0]["parent_header"]["msg_id"]
    states = [m["content"]["data"].get("state", {}) for m in handled if m["msg_type"] == "comm_msg"]
    assert {"msg_id": parent} in states, states


def test_a_widget_of_a_job_without_session_says_once_it_is_static(kernel):
    made = kernel.ok(
        "%%remote\nimport ipywidgets as w\ndisplay(w.IntSlider(value=1))",
        120,
    )
    slider = _opened(made, "IntSliderModel")

    first = front_end_sends(kernel, slider["comm_id"], _update(value=2))
    second = front_end_sends(kernel, slider["comm_id"], _update(value=3))

    said = "".join(m["content"]["text"] for m in first if m["msg_type"] == "stream")
    assert "static now" in said and "session=" in said, first
    assert not [m for m in second if m["msg_type"] == "stream"], second


def _stored(client: Any, job_id: str) -> list[Any]:
    stream = client.attach(job_id)
    events = []
    try:
        while True:
            event = stream.next(timeout=10)
            assert event is not None, "the replay stalled"
            events.append(event)
            if event.HasField("finished"):
                return events
    finally:
        stream.close()


def test_the_front_ends_messages_are_checked_and_never_stored(kernel, client):
    made = kernel.ok(
        '%%remote session="checks"\nimport ipywidgets as w\ndisplay(w.IntSlider(value=1))',
        120,
    )
    slider = _opened(made, "IntSliderModel")
    job = next(j for j in client.list_jobs() if j.session == "checks")
    before = _stored(client, job.job_id)
    assert any(e.HasField("comm") for e in before)  # the widget's own messages are

    front_end_sends(kernel, slider["comm_id"], _update(value=9))

    assert len(_stored(client, job.job_id)) == len(before)
    message = pb.CommMessage(comm_id=slider["comm_id"], data_json="{}")
    with pytest.raises(JobNotFoundError, match="no job 'nope'"):
        client.send_comm("nope", message)
    with pytest.raises(ConfigError, match="cannot open a comm on a runner"):
        client.send_comm(job.job_id, pb.CommMessage(kind=pb.CommMessage.OPEN, comm_id="x"))
    with pytest.raises(ConfigError, match="at most 3 MiB"):
        client.send_comm(job.job_id, pb.CommMessage(comm_id="x", buffers=[b"x" * (5 << 20)]))
    with pytest.raises(RemoteCellError, match="no widget with comm unknown"):
        client.send_comm(job.job_id, pb.CommMessage(comm_id="unknown", data_json="{}"))


def _captured_by(execution: Execution, comm_id: str, text: str) -> None:
    """Asserts that ``text`` was printed while the Output widget of ``comm_id`` named the
    cell's request (the front end puts it into that widget), and released after."""
    parent = execution.messages[0]["parent_header"]["msg_id"]
    seen = [
        ("stream", m["content"]["text"])
        if m["msg_type"] == "stream"
        else ("msg_id", m["content"]["data"].get("state", {}).get("msg_id"))
        for m in execution.messages
        if m["msg_type"] == "stream"
        or (m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id)
    ]
    inside = seen.index(("stream", text))
    assert seen[inside - 1] == ("msg_id", parent), seen
    assert seen[inside + 1] == ("msg_id", ""), seen


def test_a_remote_slider_comes_back_live_and_the_front_end_moves_it(kernel):
    made = kernel.ok(
        "%%remote\nimport ipywidgets as w\nslider = w.IntSlider(value=5, max=10)\ndisplay(slider)",
        120,
    )
    assert "not brought back" not in made.stderr, made.stderr
    comm_id = _opened(made, "IntSliderModel")["comm_id"]

    front_end_sends(kernel, comm_id, _update(value=7))

    read = kernel.ok("print(type(slider).__name__, slider.value, slider.model_id)")
    assert read.stdout.split() == ["IntSlider", "7", comm_id], read.stdout + read.stderr


def test_a_remote_output_widget_captures_later_local_and_remote_cells(kernel):
    made = kernel.ok("%%remote\nimport ipywidgets as w\nout = w.Output()\ndisplay(out)", 120)
    assert "not brought back" not in made.stderr, made.stderr
    comm_id = _opened(made, "OutputModel")["comm_id"]

    local = kernel.ok('with out:\n    print("from a later local cell")')
    _captured_by(local, comm_id, "from a later local cell\n")
    # No Output widget was opened anew (the job monitor is): the cell writes into the first.
    remote = kernel.ok('%%remote\nwith out:\n    print("from a later remote cell")', 120)
    models = [c["data"]["state"].get("_model_name") for c in remote.of_type("comm_open")]
    assert "OutputModel" not in models, models
    _captured_by(remote, comm_id, "from a later remote cell\n")
    assert kernel.ok("print(out.model_id)").stdout.strip() == comm_id


def test_a_remote_box_comes_back_with_its_children(kernel):
    made = kernel.ok(
        "%%remote\nimport ipywidgets as w\n"
        'box = w.VBox([w.Label("a"), w.IntSlider(value=3)], layout=w.Layout(width="50%"))\n'
        "display(box)",
        120,
    )
    ids = {c["data"]["state"]["_model_name"]: c["comm_id"] for c in made.of_type("comm_open")}
    read = kernel.ok(
        "print(box.children[0].value, box.children[1].value, box.layout.width,"
        " [c.model_id for c in box.children])"
    )
    expected = f"a 3 50% {[ids['LabelModel'], ids['IntSliderModel']]}"
    assert read.stdout.strip() == expected, read.stdout + read.stderr
