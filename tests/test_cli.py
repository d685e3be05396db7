"""The `remotecell` command line against a real control plane."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from remotecell._proto import pb

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remotecell", *args],
        env={**os.environ, **env},
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
