"""A scheduled notebook's run as a job (``JobSpec.notebook``), on a real control plane and
a real runner: the notebook runs in a kernel of its own whose ``%%remote`` cells reach
the control plane, its outputs stream as the job's, and the executed notebook and its
HTML come back as blobs; a failing cell fails the job and keeps the notebook up to it."""

from __future__ import annotations

import json
import threading

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from test_executor_local import finished, read_until, stdout_of

from remotecell._proto import pb
from remotecell.contract.schedules import inject_parameters
from remotecell.contract.values import content_hash

pytestmark = pytest.mark.kernel


def notebook_job(client, nb, control_plane, **task) -> pb.JobSpec:
    data = nbformat.writes(nb).encode()
    digest = content_hash(data)
    client.upload({digest: data})
    # The run's credential: here the test's own token (a schedule's run gets one of its own).
    return pb.JobSpec(
        code="",
        notebook=pb.NotebookTask(notebook_blob=digest, **task),
        env=control_plane.env(),
    )


def test_a_notebook_runs_as_a_job_and_its_remote_cells_reach_the_control_plane(
    client, control_plane
):
    nb = new_notebook(
        cells=[
            new_code_cell("who = 'nobody'", metadata={"tags": ["parameters"]}),
            new_code_cell("%load_ext remotecell"),
            new_code_cell("%%remote\nprint('hello', who, 6 * 7)"),
        ]
    )
    nb = inject_parameters(nb, {"who": "scheduled"})
    events = read_until(client.submit(notebook_job(client, nb, control_plane)), finished)
    end = events[-1].finished
    assert end.state == pb.SUCCEEDED, (end.message, stdout_of(events))
    assert "hello scheduled 42" in stdout_of(events)  # the cells' outputs, as they ended
    executed = nbformat.reads(bytes(client.fetch(end.notebook.notebook_blob)), as_version=4)
    texts = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "hello scheduled 42" in texts
    assert b"hello scheduled 42" in bytes(client.fetch(end.notebook.html_blob))
    assert end.notebook.failed_cell == -1
    # the %%remote cell ran as a job of its own on the control plane
    assert any(j.summary.startswith("print('hello'") for j in client.list_jobs())


def test_a_failing_cell_fails_the_run_and_keeps_the_notebook_up_to_it(client, control_plane):
    nb = new_notebook(
        cells=[
            new_code_cell("print('first ran')"),
            new_code_cell("raise ValueError('bad data')"),
            new_code_cell("print('never')"),
        ]
    )
    events = read_until(client.submit(notebook_job(client, nb, control_plane)), finished)
    end = events[-1].finished
    assert end.state == pb.FAILED and "bad data" in end.message, end
    assert end.notebook.failed_cell == 1 and "ValueError" in end.notebook.error
    executed = nbformat.reads(bytes(client.fetch(end.notebook.notebook_blob)), as_version=4)
    assert "first ran" in json.dumps(executed.cells[0].outputs)
    assert not executed.cells[2].get("outputs")
    errors = [e.error for e in events if e.HasField("error")]
    assert errors and "bad data" in errors[-1].message


def test_cancelling_a_run_stops_its_kernel(client, control_plane):
    nb = new_notebook(
        cells=[new_code_cell("print('started', flush=True)\nimport time\ntime.sleep(120)")]
    )
    stream = client.submit(notebook_job(client, nb, control_plane))
    first = next(iter(stream))
    job_id = first.job_id
    canceller = threading.Timer(3.0, lambda: client.cancel(job_id))
    canceller.start()
    events = read_until(stream, finished)
    canceller.join(30)
    assert events[-1].finished.state == pb.CANCELLED, events[-1]


def test_bad_notebook_runs_are_refused(client):
    from remotecell.contract.errors import ConfigError

    with pytest.raises(ConfigError, match="notebook run's notebook"):
        list(client.submit(pb.JobSpec(notebook=pb.NotebookTask(notebook_blob="../x"))))
    spec = pb.JobSpec(
        notebook=pb.NotebookTask(notebook_blob="0" * 32), serve=pb.Serve(deployment="d")
    )
    with pytest.raises(ConfigError, match="not both"):
        list(client.submit(spec))
