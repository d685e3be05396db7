"""Sessions, detached jobs, job listings and reattaching, through a real Jupyter kernel."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel


def test_session_keeps_the_remote_namespace_across_cells(kernel):
    kernel.ok('%%remote session="train"\nimport os\nweights = [1, 2, 3]\npid = os.getpid()')
    run = kernel.ok(
        '%%remote session="train" pull=[]\nweights.append(4)\n(sum(weights), os.getpid())'
    )
    first_pid = kernel.value("pid")
    assert run.result["text/plain"] == f"(10, {first_pid})"
    # `weights` lives in the session, not in a fresh cell's namespace
    kernel.ok("del weights")
    run = kernel.execute("%%remote\nweights")
    assert run.error["ename"] == "NameError"
    assert run.error["evalue"] == "name 'weights' is not defined"
    # a session name can come from a notebook variable
    kernel.ok("name = 'train'")
    run = kernel.ok("%%remote session=name pull=[]\nlen(weights)")
    assert run.result["text/plain"] == "4"


def test_detach_returns_a_job_handle_and_result_brings_everything_back(kernel):
    run = kernel.ok(
        '%%remote detach=True\nimport time\ntime.sleep(0.5)\nprint("done sleeping")\nanswer = 42\nanswer'
    )
    assert run.stdout == ""  # nothing shown while detached
    assert run.result["text/plain"].startswith("<RemoteJob job-")
    kernel.ok("job = _")
    assert kernel.value("job.status()") in ("queued", "running", "succeeded")
    run = kernel.ok("job.result()")
    assert run.stdout == "done sleeping\n"
    assert run.result["text/plain"] == "42"
    assert kernel.value("answer") == 42
    assert kernel.value("job.status()") == "succeeded"
    assert kernel.value("job.done()") is True


def test_remote_jobs_lists_jobs_with_state_and_code(kernel):
    kernel.ok("%%remote\nfirst_line_marker = 1")
    run = kernel.ok("%remote_jobs")
    header, *rows = run.displayed.splitlines()
    assert header.split() == ["JOB", "STATE", "STARTED", "DURATION", "GPU", "COST", "CODE"]
    assert any("succeeded" in row and "first_line_marker = 1" in row for row in rows)
    bad = kernel.execute("%remote_jobs many")
    assert bad.error["ename"] == "ConfigError" and "usage: %remote_jobs [N]" in bad.error["evalue"]


def test_reattach_after_a_kernel_restart_replays_output_and_pulls_results(kernel):
    run = kernel.ok(
        '%%remote detach=True\nimport time\nfor i in range(3):\n    print("step", i)\n    time.sleep(0.3)\n'
        'total = 10 * 3\n"finished"'
    )
    job_id = run.result["text/plain"].split()[1]
    kernel.restart()
    kernel.ok("%load_ext remotecell")
    assert kernel.execute("total").error["ename"] == "NameError"
    run = kernel.ok(f"%remote_attach {job_id}")
    assert run.stdout == "step 0\nstep 1\nstep 2\n"
    assert run.result["text/plain"] == "'finished'"
    assert kernel.value("total") == 30
    # attaching again (the job is long finished) replays the same
    assert kernel.ok(f"%remote_attach {job_id}").stdout == "step 0\nstep 1\nstep 2\n"
    bad = kernel.execute("%remote_attach")
    assert (
        bad.error["ename"] == "ConfigError" and "usage: %remote_attach JOB" in bad.error["evalue"]
    )


def test_bad_options_are_one_sentence_and_run_nothing(kernel, client):
    before = len(client.list_jobs())
    run = kernel.execute("%%remote gpu_count=2\nx = 1")
    assert run.error["ename"] == "ConfigError"
    assert "unknown %%remote option 'gpu_count'" in run.error["evalue"]
    assert "timeout=" in run.error["evalue"]  # lists what is valid
    assert run.error["traceback"] == [f"ConfigError: {run.error['evalue']}"]
    run = kernel.execute("%%remote timeout=-1\nx = 1")
    assert "bad value for %%remote option timeout=-1" in run.error["evalue"]
    assert len(client.list_jobs()) == before


def test_syntax_errors_are_reported_locally_with_the_notebook_line(kernel, client):
    before = len(client.list_jobs())
    run = kernel.execute("%%remote\nx = 1\ny = (")
    assert run.error["ename"] == "CellSyntaxError"
    assert run.error["evalue"] == "line 3 of the cell: '(' was never closed; nothing was sent"
    text = "\n".join(run.error["traceback"])
    assert 'File "<cell>", line 3' in text and "SyntaxError: '(' was never closed" in text
    assert "_magics.py" not in text
    assert len(client.list_jobs()) == before
