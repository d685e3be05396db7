"""The directory a task runs in (``runner/_workdir.py``) and the control plane's checks of
a job's working directory (``contract/workdir.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from remotecell._proto import pb
from remotecell.backend.runner._workdir import RunnerWorkdir
from remotecell.client import ConfigError
from remotecell.contract import workdir as rules
from remotecell.contract.values import content_hash

X = content_hash(b"x")  # uploaded by the test that names it


def task(job_id: str, workdir: pb.Workdir) -> pb.Task:
    return pb.Task(job_id=job_id, spec=pb.JobSpec(code="1", workdir=workdir))


def snapshot(path: str, files: dict[str, bytes]) -> tuple[pb.Workdir, dict[str, bytes]]:
    blobs = {content_hash(data): data for data in files.values()}
    workdir = pb.Workdir(
        path=path,
        snapshot=True,
        files=[
            pb.WorkdirFile(path=p, blob=content_hash(d), size=len(d), executable=p.endswith(".sh"))
            for p, d in files.items()
        ],
    )
    return workdir, blobs


def run_in(workdir: RunnerWorkdir, t: pb.Task, body) -> tuple[pb.Finished, list]:  # type: ignore[no-untyped-def]
    events: list = []

    def run(emit):  # type: ignore[no-untyped-def]
        body()
        return pb.Finished(state=pb.SUCCEEDED)

    return workdir.around(t, run)(events.append), events


def test_a_task_runs_in_the_notebooks_directory_and_the_runner_returns_to_its_own(tmp_path):
    (tmp_path / "data.csv").write_text("1,2\n")
    home = os.getcwd()
    seen: list[str] = []
    finished, events = run_in(
        RunnerWorkdir(lambda d: b""),
        task("job-1", pb.Workdir(path=str(tmp_path))),
        lambda: seen.append(Path("data.csv").read_text()),
    )
    assert finished.state == pb.SUCCEEDED and events == []
    assert seen == ["1,2\n"]
    assert os.getcwd() == home


def test_a_directory_missing_on_the_runners_machine_fails_the_task_in_one_sentence(tmp_path):
    missing = tmp_path / "gone"
    ran: list[bool] = []
    finished, events = run_in(
        RunnerWorkdir(lambda d: b""),
        task("job-1", pb.Workdir(path=str(missing))),
        lambda: ran.append(True),
    )
    assert ran == [] and finished.state == pb.FAILED
    [error] = events
    assert error.kind == pb.Error.SETUP and error.type_name == "WorkdirError"
    assert error.message == (
        f"the notebook's working directory {missing} cannot be entered on the runner's "
        "machine (No such file or directory), so the cell did not run; run it from a "
        "notebook in a directory that the runner can read"
    )


def test_a_snapshot_is_written_out_per_job_fetched_once_and_removed_after():
    files = {"data.csv": b"a\n", "images/x.png": b"png", "run.sh": b"echo\n"}
    workdir, blobs = snapshot("/notebooks/project", files)
    fetched: list[str] = []

    def fetch(digest: str) -> bytes:
        fetched.append(digest)
        return blobs[digest]

    runner = RunnerWorkdir(fetch)
    seen: dict[str, object] = {}

    def body() -> None:
        seen["cwd"] = os.getcwd()
        seen["files"] = {p: Path(p).read_bytes() for p in files}
        seen["exec"] = os.access("run.sh", os.X_OK)
        Path("written.txt").write_text("stays on the runner")

    try:
        finished, events = run_in(runner, task("job-1", workdir), body)
        assert finished.state == pb.SUCCEEDED and events == []
        assert seen["files"] == files and seen["exec"] is True
        assert not Path(str(seen["cwd"])).exists()  # the job's directory went with it
        finished, _ = run_in(runner, task("job-2", workdir), body)
        assert finished.state == pb.SUCCEEDED
        assert sorted(fetched) == sorted(blobs)  # the second job used the cache
    finally:
        runner.close()


def test_a_snapshot_that_names_a_path_outside_its_directory_is_refused():
    workdir, blobs = snapshot("/nb", {"../escape": b"x"})
    runner = RunnerWorkdir(blobs.__getitem__)
    try:
        finished, events = run_in(runner, task("job-1", workdir), lambda: None)
    finally:
        runner.close()
    assert finished.state == pb.FAILED
    assert "must be relative, '/'-separated and stay inside the directory" in events[0].message


@pytest.mark.parametrize(
    "workdir, message",
    [
        (pb.Workdir(path="relative/dir"), "must be an absolute path of at most 4096"),
        (pb.Workdir(path="/" + "x" * 5000), "must be an absolute path of at most 4096"),
        (
            pb.Workdir(path="/nb", snapshot=True, files=[pb.WorkdirFile(path="/etc/x", blob=X)]),
            "stay inside the directory",
        ),
        (
            pb.Workdir(
                path="/nb",
                snapshot=True,
                files=[pb.WorkdirFile(path="a", blob=X, size=rules.MAX_FILE_BYTES + 1)],
            ),
            "is over 4 MiB",
        ),
        (pb.Workdir(path="/nb", files=[pb.WorkdirFile(path="a", blob=X)]), "not a snapshot"),
    ],
)
def test_the_control_plane_refuses_a_bad_working_directory(client, workdir, message):
    client.upload({X: b"x"})
    with pytest.raises(ConfigError, match=message):
        next(iter(client.submit(pb.JobSpec(code="1", workdir=workdir))))
