"""Faults and cancels, for real: runners killed mid-cell, a control plane killed (or
stopped) while jobs run, cancels from the CLI and at awkward moments, timeouts.

Each test starts a real control plane (`remotecell serve`) with real runner processes,
breaks one of them (SIGKILL, SIGSTOP, SIGTERM) and checks what a client sees and what
the store keeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from support import wait_until

from remotecell._proto import pb
from remotecell.client import Client, EventStream


def kind(event: pb.JobEvent) -> str:
    return event.WhichOneof("body")


def read_until(
    stream: EventStream, predicate: Any, timeout: float = 30.0, into: list | None = None
) -> pb.JobEvent:
    """Reads events (kept in ``into``) until one satisfies ``predicate``; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = stream.next(timeout=0.2)
        if event is None:
            continue
        if into is not None:
            into.append(event)
        if predicate(event):
            return event
    raise AssertionError(f"no such event within {timeout:g} s; got {into}")


def read_to_end(stream: EventStream, timeout: float = 30.0) -> list[pb.JobEvent]:
    events: list[pb.JobEvent] = []
    read_until(stream, lambda e: kind(e) == "finished", timeout, events)
    return events


def printed_pid(stream: EventStream, events: list[pb.JobEvent]) -> int:
    """The pid the cell printed on its first line of output."""
    read_until(stream, lambda e: "\n" in stdout_of(events), 60, events)
    return int(stdout_of(events).split()[0])


def stored(client: Client, job_id: str) -> list[pb.JobEvent]:
    """Every stored event of a finished job (Attach from 0)."""
    stream = client.attach(job_id, 0)
    try:
        return read_to_end(stream, 10)
    finally:
        stream.close()


def assert_contiguous(events: list[pb.JobEvent]) -> None:
    """The numbered events (all but telemetry samples) are 0, 1, 2, ... with no gaps."""
    seqs = [e.seq for e in events if kind(e) != "metrics"]
    assert seqs == list(range(len(seqs))), seqs


def stdout_of(events: list[pb.JobEvent]) -> str:
    return "".join(
        e.stream.text for e in events if kind(e) == "stream" and e.stream.name == pb.Stream.STDOUT
    )


SLEEPER = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)\n"


def test_runner_killed_mid_cell_fails_the_job_saying_how(client):
    stream = client.submit(pb.JobSpec(code=SLEEPER))
    events: list[pb.JobEvent] = []
    pid = printed_pid(stream, events)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    end = read_until(stream, lambda e: kind(e) == "finished", 10, events)
    assert time.monotonic() - killed_at < 10
    stream.close()

    assert end.finished.state == pb.FAILED
    errors = [e.error for e in events if kind(e) == "error"]
    assert len(errors) == 1
    assert errors[0].kind == pb.Error.RUNNER_DIED
    assert "runner" in errors[0].message and "SIGKILL" in errors[0].message
    assert "SIGKILL" in end.finished.message
    info = client.get_job(end.job_id)
    assert info.state == pb.FAILED and "SIGKILL" in info.message
    all_events = stored(client, end.job_id)
    assert_contiguous(all_events)
    assert [kind(e) for e in all_events[-2:]] == ["error", "finished"]


def test_runner_killed_mid_cell_is_retried_when_retries_allow(client, tmp_path):
    marker = tmp_path / "first-attempt"
    code = (
        "import os, pathlib, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.write_text('x')\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(120)\n"
        "print('second attempt on', os.getpid())\n"
    )
    stream = client.submit(pb.JobSpec(code=code, retries=1))
    events: list[pb.JobEvent] = []
    pid = printed_pid(stream, events)
    os.kill(pid, signal.SIGKILL)
    end = read_until(stream, lambda e: kind(e) == "finished", 60, events)
    stream.close()

    assert end.finished.state == pb.SUCCEEDED, end
    retrying = [e.status for e in events if kind(e) == "status" and "retrying" in e.status.message]
    assert len(retrying) == 1
    assert "SIGKILL" in retrying[0].message and "attempt 2 of 2" in retrying[0].message
    second = stdout_of(events).splitlines()[-1]
    assert second.startswith("second attempt on ") and int(second.split()[-1]) != pid
    # the retry is no failure: no error event reaches the client
    assert not [e for e in events if kind(e) == "error"]
    info = client.get_job(end.job_id)
    assert info.state == pb.SUCCEEDED and info.attempt == 2
    assert_contiguous(stored(client, end.job_id))


def test_retry_delay_0_starts_a_failed_job_again_at_once(make_control_plane, tmp_path):
    client = make_control_plane("--retry-delay", "0").client()
    attempts = tmp_path / "attempts"
    code = (
        "import pathlib\n"
        f"attempts = pathlib.Path({str(attempts)!r})\n"
        "n = len(attempts.read_text()) if attempts.exists() else 0\n"
        "attempts.write_text('x' * (n + 1))\n"
        "if n < 2:\n"
        "    raise RuntimeError(f'attempt {n + 1} fails')\n"
        "print('third attempt')\n"
    )
    try:
        stream = client.submit(pb.JobSpec(code=code, retries=2))
        events: list[pb.JobEvent] = []
        read_until(stream, lambda e: "retrying" in e.status.message, 60, events)
        first_retry = time.monotonic()
        end = read_until(stream, lambda e: kind(e) == "finished", 30, events)
        took = time.monotonic() - first_retry
        stream.close()
    finally:
        client.close()

    assert end.finished.state == pb.SUCCEEDED, end
    assert stdout_of(events) == "third attempt\n"
    retrying = [e.status.message for e in events if "retrying" in e.status.message]
    assert len(retrying) == 2
    # The default (1 s, doubling) would say "retrying in 1 s", then "in 2 s", and wait 3 s.
    assert all("retrying (attempt" in message for message in retrying), retrying
    assert took < 2.0, took


def test_control_plane_killed_while_a_job_runs_loses_nothing(control_plane):
    client = control_plane.client()
    code = (
        "import time\n"
        "for i in range(15):\n"
        "    print('line', i, flush=True)\n"
        "    time.sleep(0.2)\n"
        "'done'\n"
    )
    stream = client.submit(pb.JobSpec(code=code))
    seen: list[pb.JobEvent] = []
    failures: list[BaseException] = []

    def consume() -> None:
        try:
            read_until(stream, lambda e: kind(e) == "finished", 90, seen)
        except BaseException as err:
            failures.append(err)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        wait_until(lambda: "line 2" in stdout_of(list(seen)), 60, what="the job's output")
        runner_pids = _runner_pids(control_plane.data_dir)
        control_plane.kill()
        time.sleep(0.5)  # the job keeps printing with no control plane
        control_plane.start()
        consumer.join(60)
        assert not consumer.is_alive(), "the client's stream did not end"
        assert not failures, failures
    finally:
        stream.close()
        client.close()

    # The client saw every event once, in order, across the restart.
    assert_contiguous(seen)
    assert seen[-1].finished.state == pb.SUCCEEDED, seen[-1]
    assert stdout_of(seen) == "".join(f"line {i}\n" for i in range(15))
    # The same runner finished the job: it reconnected rather than being replaced.
    assert _runner_pids(control_plane.data_dir) == runner_pids

    fresh = control_plane.client()
    try:
        everything = stored(fresh, seen[0].job_id)
        # The same numbered events are stored (samples are stored downsampled, not as sent).
        assert [e.SerializeToString() for e in everything if kind(e) != "metrics"] == [
            e.SerializeToString() for e in seen if kind(e) != "metrics"
        ]
        assert fresh.get_job(seen[0].job_id).state == pb.SUCCEEDED
    finally:
        fresh.close()


def test_queued_job_survives_a_control_plane_restart(make_control_plane):
    cp = make_control_plane("--max-runners", "1", "--reconnect-grace", "10")
    client = cp.client()
    try:
        first = client.submit(
            pb.JobSpec(code="import time\nprint('first', flush=True)\ntime.sleep(3)")
        )
        first_id = read_until(first, lambda e: kind(e) == "accepted").job_id
        read_until(first, lambda e: kind(e) == "stream", 60)
        second = client.submit(pb.JobSpec(code="print('second ran')"))
        second_id = read_until(second, lambda e: kind(e) == "accepted").job_id
        read_until(second, lambda e: kind(e) == "status" and "busy" in e.status.message)
        assert client.get_job(second_id).state == pb.QUEUED
        first.close()
        second.close()
        runner_pids = _runner_pids(cp.data_dir)
        assert len(runner_pids) == 1

        cp.kill()
        cp.start()
        after = cp.client()
        try:
            for job_id in (first_id, second_id):
                events = read_to_end(after.attach(job_id), 60)
                assert events[-1].finished.state == pb.SUCCEEDED, events[-1]
            assert "second ran" in stdout_of(stored(after, second_id))
            assert "first" in stdout_of(stored(after, first_id))
            for job_id in (first_id, second_id):
                assert_contiguous(stored(after, job_id))
            # --max-runners 1 held across the restart: the runner that came back ran both.
            assert _runner_pids(cp.data_dir) == runner_pids
        finally:
            after.close()
    finally:
        client.close()


def _runner_pids(data_dir: Path) -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "remotecell.backend.runner" in cmd and any(str(data_dir) in part for part in cmd):
            pids.add(proc.pid)
    return pids


def remotecell_cli(control_plane: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remotecell", *args],
        env={**os.environ, **control_plane.env()},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_cancel_cancels_a_running_job(control_plane, client):
    stream = client.submit(pb.JobSpec(code=SLEEPER))
    events: list[pb.JobEvent] = []
    pid = printed_pid(stream, events)

    done = remotecell_cli(control_plane, "cancel", events[0].job_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{events[0].job_id}: cancelled"
    end = read_until(stream, lambda e: kind(e) == "finished", 10, events)
    stream.close()
    assert end.finished.state == pb.CANCELLED
    assert "remotecell cancel" in end.finished.message
    errors = [e.error for e in events if kind(e) == "error"]
    assert [e.kind for e in errors] == [pb.Error.CANCELLED]
    assert psutil.pid_exists(pid)  # interrupted, not killed
    assert_contiguous(stored(client, end.job_id))


def test_cli_cancel_of_an_unknown_job_fails_in_one_line(control_plane):
    done = remotecell_cli(control_plane, "cancel", "job-nope")
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "job-nope" in lines[0] and "remotecell jobs" in lines[0]


def test_cancel_as_the_job_starts_interrupts_the_cell_not_its_runner(
    make_control_plane, monkeypatch
):
    # A fresh runner gets its task while it is still setting up its shell: a cancel
    # arriving then must stop the task when it starts, not leave the runner to be killed.
    # Spawned (not forked) runners take most of a second to set up their shell after they
    # connect, so the cancel reliably arrives in that window.
    monkeypatch.setenv("REMOTECELL_LOCAL_FORK", "0")
    client = make_control_plane("--cancel-grace", "2").client()
    stream = client.submit(pb.JobSpec(code=SLEEPER))
    events: list[pb.JobEvent] = []
    started = read_until(
        stream, lambda e: kind(e) == "status" and e.status.state == pb.RUNNING, 60, events
    )
    reply = client.cancel(started.job_id, "changed my mind")
    assert reply.state == pb.CANCELLED
    end = read_until(stream, lambda e: kind(e) == "finished", 10, events)
    stream.close()
    assert end.finished.state == pb.CANCELLED
    assert end.finished.message == "changed my mind"  # no "its runner was killed"
    assert stdout_of(events) == ""  # the cell never ran
    again = read_to_end(client.submit(pb.JobSpec(code="import os\nprint(os.getpid())")))
    assert again[-1].finished.state == pb.SUCCEEDED
    assert {e.status.runner_id for e in again if kind(e) == "status" and e.status.runner_id} == {
        started.status.runner_id
    }
    client.close()


def test_an_idle_runner_reconnects_after_a_restart_however_long_it_was_idle(control_plane):
    # Started by hand so its --orphan-timeout can be short: it has been connected (and
    # idle) for longer than that when the control plane dies, and must not take that
    # idle time for time without a control plane.
    from remotecell.backend.server import local_user
    from remotecell.backend.state.credentials import CredentialStore

    # Its own credential, as the control plane would mint it for a runner of this user.
    credentials = CredentialStore(control_plane.data_dir / "state.sqlite3")
    token = credentials.mint_runner("r-by-hand", local_user(), frozenset())
    credentials.close()
    env = {**os.environ, "REMOTECELL_RUNNER_TOKEN": token}
    args = ["--runner-id", "r-by-hand", "--url", control_plane.socket, "--orphan-timeout", "2"]
    runner = subprocess.Popen(
        [sys.executable, "-m", "remotecell.backend.runner", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = control_plane.client()
        wait_until(lambda: client.health().runners == 1, 30, what="the runner to connect")
        client.close()
        time.sleep(3)
        control_plane.kill()
        control_plane.start()
        client = control_plane.client()
        try:
            wait_until(lambda: client.health().runners == 1, 30, what="the runner to reconnect")
            assert runner.poll() is None
            events = read_to_end(client.submit(pb.JobSpec(code="import os\nprint(os.getpid())")))
            assert int(stdout_of(events)) == runner.pid
        finally:
            client.close()
    finally:
        runner.kill()
        runner.wait(10)


def test_stopping_the_control_plane_fails_its_running_jobs_and_leaves_no_runner(control_plane):
    client = control_plane.client()
    stream = client.submit(pb.JobSpec(code=SLEEPER, retries=0))
    events: list[pb.JobEvent] = []
    pid = printed_pid(stream, events)
    stream.close()
    client.close()

    control_plane.proc.send_signal(signal.SIGTERM)
    control_plane.proc.wait(20)
    assert not _runner_pids(control_plane.data_dir)
    assert not psutil.pid_exists(pid)

    control_plane.start()
    client = control_plane.client()
    try:
        info = client.get_job(events[0].job_id)
        assert info.state == pb.FAILED
        assert "control plane was stopped" in info.message
        assert_contiguous(stored(client, info.job_id))
    finally:
        client.close()


def test_a_runner_back_after_its_job_was_given_up_stops_that_cell(make_control_plane):
    cp = make_control_plane("--max-runners", "1", "--reconnect-grace", "2", "--cancel-grace", "2")
    client = cp.client()
    code = "import os, time\nprint(os.getpid(), flush=True)\nwhile True:\n    time.sleep(0.2)\n    print('tick')"
    stream = client.submit(pb.JobSpec(code=code))
    events: list[pb.JobEvent] = []
    pid = printed_pid(stream, events)
    job_id = events[0].job_id
    stream.close()
    client.close()

    cp.kill()
    os.kill(pid, signal.SIGSTOP)  # it cannot reconnect within the grace
    try:
        cp.start()
        client = cp.client()
        wait_until(
            lambda: client.get_job(job_id).state == pb.FAILED, 20, what="the job to be given up"
        )
        assert "did not reconnect within 2 s" in client.get_job(job_id).message
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        wait_until(lambda: client.health().runners == 1, 20, what="the runner to come back")
        # Back, it is told to stop the cell it still runs, and then takes the next job.
        again = read_to_end(client.submit(pb.JobSpec(code="import os\nprint(os.getpid())")), 30)
        assert again[-1].finished.state == pb.SUCCEEDED
        assert int(stdout_of(again)) == pid
        # The given-up job's history ends where the control plane ended it.
        history = stored(client, job_id)
        assert_contiguous(history)
        assert kind(history[-1]) == "finished" and history[-1].finished.state == pb.FAILED
        assert client.get_job(job_id).events == len(history)
    finally:
        client.close()


def test_a_timeout_still_applies_after_a_control_plane_restart(control_plane):
    client = control_plane.client()
    stream = client.submit(pb.JobSpec(code=SLEEPER, timeout_s=3))
    events: list[pb.JobEvent] = []
    pid = printed_pid(stream, events)
    control_plane.kill()
    control_plane.start()
    try:
        end = read_until(stream, lambda e: kind(e) == "finished", 20, events)
        assert end.finished.state == pb.FAILED
        errors = [e.error for e in events if kind(e) == "error"]
        assert [e.kind for e in errors] == [pb.Error.TIMEOUT]
        assert "timeout of 3 s" in errors[0].message
        assert psutil.pid_exists(pid)  # the cell was interrupted; its runner lives on
        assert_contiguous(events)
    finally:
        stream.close()
        client.close()


def test_a_running_jobs_gpus_stay_taken_after_a_restart_until_its_runner_is_back(
    make_control_plane, monkeypatch
):
    monkeypatch.setenv("REMOTECELL_FAKE_NVML", "NVIDIA H100 80GB HBM3")
    control_plane = make_control_plane("--reconnect-grace", "60")
    client = control_plane.client()
    spec = pb.JobSpec(
        code="import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)",
        resources=pb.Resources(gpu=[pb.GPUChoice(type="H100", count=1)]),
    )
    stream = client.submit(spec)
    events: list[pb.JobEvent] = []
    pid = printed_pid(stream, events)
    job_id = events[0].job_id
    (before,) = client.list_gpus().gpus
    stream.close()
    client.close()
    os.kill(pid, signal.SIGSTOP)  # the runner cannot reconnect while it is stopped
    try:
        control_plane.kill()
        control_plane.start()
        fresh = control_plane.client()
        try:
            (after,) = fresh.list_gpus().gpus
            assert (after.runner_id, after.job_id) == (before.runner_id, job_id)
            # A second H100 job waits for it rather than sharing the card.
            waiting = fresh.submit(spec)
            status = read_until(waiting, lambda e: kind(e) == "status", 10)
            assert status.status.state == pb.QUEUED
            fresh.cancel(status.job_id)
            waiting.close()
        finally:
            os.kill(pid, signal.SIGCONT)
            fresh.cancel(job_id)
            fresh.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
