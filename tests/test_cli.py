"""The `remotecell` command line against a real control plane."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from remotecell._proto import pb

ROOT = Path(__file__).resolve().parents[1]


def cli(
    *args: str, env: dict[str, str], timeout: float = 60, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "remotecell", *args],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_jobs_and_logs(control_plane, client):
    events = list(
        client.submit(
            pb.JobSpec(
                code="print('hello from the job')\nimport sys\nprint('oops', file=sys.stderr)"
            )
        )
    )
    job_id = events[0].job_id
    failed_events = list(client.submit(pb.JobSpec(code="raise ValueError('bad input')")))
    failed = failed_events[0].job_id

    listing = cli("jobs", env=control_plane.env())
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["JOB", "STATE", "STARTED", "DURATION", "GPU", "COST", "CODE"]
    assert any(
        job_id in line and "succeeded" in line and "print('hello from the job')" in line
        for line in lines
    )
    assert any(failed in line and "failed" in line for line in lines)

    logs = cli("logs", job_id, env=control_plane.env())
    assert logs.returncode == 0
    assert logs.stdout == "hello from the job\n"
    assert "oops" in logs.stderr and f"[{job_id} succeeded]" in logs.stderr

    logs = cli("logs", failed, env=control_plane.env())
    assert "ValueError" in logs.stderr and "bad input" in logs.stderr and "failed" in logs.stderr


def test_logs_follow_streams_a_running_job_to_its_end(control_plane, client):
    stream = client.submit(
        pb.JobSpec(
            code="import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.3)"
        )
    )
    job_id = next(stream).job_id
    drained = threading.Thread(target=lambda: list(stream))
    drained.start()
    follow = cli("logs", "-f", job_id, env=control_plane.env())
    drained.join(30)
    assert follow.returncode == 0
    assert follow.stdout == "tick 0\ntick 1\ntick 2\ntick 3\n"


def test_unknown_job_and_unreachable_control_plane_are_one_line(control_plane, tmp_path):
    missing = cli("logs", "job-nope", env=control_plane.env())
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "Error: no job 'job-nope' on this control plane; `remotecell jobs` lists the jobs it has"
    ]
    nowhere = cli(
        "jobs", env={"REMOTECELL_URL": f"unix:{tmp_path}/none.sock", "REMOTECELL_TOKEN": "x"}
    )
    assert nowhere.returncode == 1
    assert "no remotecell control plane answers" in nowhere.stderr
    assert len(nowhere.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_data_dir_another_control_plane_uses(control_plane):
    second = cli(
        "serve",
        "--data-dir",
        str(control_plane.data_dir),
        "--listen",
        "127.0.0.1:0",
        env={},
        timeout=30,
    )
    assert second.returncode == 1
    assert "already runs on" in second.stderr


def test_generated_protocol_code_is_current():
    done = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_gpus_on_a_machine_without_nvml_says_so(control_plane):
    listing = cli("gpus", env=control_plane.env())
    assert listing.returncode == 0
    assert listing.stdout.startswith("no GPUs: no NVIDIA driver (NVML) on this machine")


def test_logs_and_cancel_take_a_unique_prefix_of_a_job_id(control_plane, client):
    first_events = list(client.submit(pb.JobSpec(code="print('first')")))
    second_events = list(client.submit(pb.JobSpec(code="print('second')")))
    first, second = first_events[0].job_id, second_events[0].job_id

    by_prefix = cli("logs", first[:-1], env=control_plane.env())
    assert by_prefix.returncode == 0, by_prefix.stderr
    assert by_prefix.stdout == "first\n" and f"[{first} succeeded]" in by_prefix.stderr
    without_job_dash = cli("logs", second.removeprefix("job-")[:6], env=control_plane.env())
    assert without_job_dash.stdout == "second\n", without_job_dash.stderr

    ambiguous = cli("logs", "job-", env=control_plane.env())
    assert ambiguous.returncode == 1
    lines = ambiguous.stderr.strip().splitlines()
    assert len(lines) == 1 and "jobs start with 'job-'" in lines[0]
    assert first in lines[0] and second in lines[0]

    cancelled = cli("cancel", second[:-1], env=control_plane.env())
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"{second} had already finished")


def test_cancel_says_a_finished_job_had_already_finished(control_plane, client):
    events = list(client.submit(pb.JobSpec(code="raise ValueError('done')")))
    job_id = events[0].job_id
    cancelled = cli("cancel", job_id, env=control_plane.env())
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"{job_id} had already finished (failed); nothing to cancel\n"


def test_read_only_commands_do_not_start_a_control_plane(tmp_path):
    from remotecell.client._embedded import stop

    env = {"REMOTECELL_DATA_DIR": str(tmp_path)}
    unset = ("REMOTECELL_URL", "REMOTECELL_TOKEN", "REMOTECELL_TOKEN_FILE")
    try:
        for args in (["jobs"], ["gpus"], ["logs", "job-nope"], ["cancel", "job-nope"]):
            done = cli(*args, env=env, unset=unset, timeout=60)
            assert done.returncode == 1, (args, done.stdout)
            assert done.stderr.strip().splitlines() == [
                "Error: no remotecell control plane is running: start one with "
                "`remotecell serve` (or run a `%%remote` cell), or point --url / "
                "REMOTECELL_URL at one"
            ], args
        assert not (tmp_path / "server.json").exists()
    finally:
        stop(tmp_path)


def test_token_file_stands_in_for_the_token(control_plane, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(control_plane.endpoint.token + "\n")
    env = {"REMOTECELL_URL": control_plane.endpoint.url, "REMOTECELL_TOKEN_FILE": str(token_file)}
    listing = cli("jobs", env=env, unset=("REMOTECELL_TOKEN",))
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("JOB")


def test_help_lists_every_command_in_whole_sentences():
    for group in ([], ["image"], ["secret"], ["volume"]):
        done = cli(*group, "--help", env={"COLUMNS": "80"})
        assert done.returncode == 0, done.stderr
        listed = done.stdout.split("Commands:")[1].splitlines()
        for line in filter(None, listed):
            assert not line.endswith("..."), line
            assert line.count("(") == line.count(")"), line
