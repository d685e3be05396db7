"""Cancel, timeouts and faults as a notebook user meets them, through a real Jupyter kernel."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import psutil
import pytest
from support import Execution, wait_until

from remotecell._proto import pb

pytestmark = pytest.mark.kernel

SPINNER = "import os, time\nprint(os.getpid(), flush=True)\nfor i in range(600): time.sleep(0.1)"
STUBBORN = (
    "import os, time\n"
    "print(os.getpid(), flush=True)\n"
    "while True:\n"
    "    try:\n"
    "        time.sleep(1)\n"
    "    except KeyboardInterrupt:\n"
    "        pass\n"
)


def running_job(client: Any) -> pb.JobInfo:
    """The one job the control plane runs now (waits until there is one)."""

    def find() -> pb.JobInfo | None:
        running = [j for j in client.list_jobs() if j.state == pb.RUNNING]
        return running[0] if running else None

    return wait_until(find, 60, interval=0.1, what="a running job")


class Background:
    """Runs a cell in the kernel from a thread, so the test can act while it runs."""

    def __init__(self, kernel: Any, code: str) -> None:
        self.stdout = ""
        self.result: list[Execution] = []
        self._thread = threading.Thread(
            target=lambda: self.result.append(kernel.execute(code, 90, self._seen)), daemon=True
        )
        self._thread.start()

    def _seen(self, msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            self.stdout += msg["content"]["text"]

    def pid(self) -> int:
        wait_until(lambda: "\n" in self.stdout, 60, what="the cell's pid")
        return int(self.stdout.split()[0])

    def wait(self) -> Execution:
        self._thread.join(60)
        assert self.result, "the cell did not end"
        return self.result[0]


def test_interrupting_the_kernel_cancels_the_job_and_the_runner_survives(kernel, client):
    cell = Background(kernel, "%%remote\n" + SPINNER)
    job = running_job(client)
    pid = cell.pid()
    kernel.interrupt()
    run = cell.wait()

    assert run.reply["status"] == "error"
    assert run.error["ename"] == "KeyboardInterrupt"
    # One line saying what became of the job, not remotecell's frames.
    assert run.error["traceback"] == [
        f"KeyboardInterrupt: job {job.job_id} cancelled (interrupted in the notebook)"
    ]
    info = client.get_job(job.job_id)
    assert info.state == pb.CANCELLED, info
    assert "interrupted in the notebook" in info.message
    # The cell was interrupted, not its runner killed: the next cell runs on it.
    again = kernel.ok("%%remote\nimport os\nos.getpid()")
    assert int(again.result["text/plain"]) == pid


def test_a_cell_that_ignores_the_interrupt_gets_its_runner_killed(kernel, client):
    cell = Background(kernel, "%%remote\n" + STUBBORN)
    job = running_job(client)
    pid = cell.pid()
    kernel.interrupt()
    run = cell.wait()

    assert run.error["ename"] == "KeyboardInterrupt"
    info = client.get_job(job.job_id)
    assert info.state == pb.CANCELLED, info
    assert "did not stop within 2 s" in info.message and "runner was killed" in info.message
    wait_until(lambda: not psutil.pid_exists(pid), 10, what="the stubborn runner to end")
    # The kernel is usable afterwards; a fresh runner takes the next cell.
    assert int(kernel.ok("%%remote\nimport os\nos.getpid()").result["text/plain"]) != pid


def test_a_runner_killed_mid_cell_raises_remote_error_saying_so(kernel):
    cell = Background(kernel, "%%remote\n" + SPINNER)
    os.kill(cell.pid(), signal.SIGKILL)
    run = cell.wait()

    assert run.error["ename"] == "RemoteError"
    assert "runner" in run.error["evalue"] and "died" in run.error["evalue"]
    assert "killed by SIGKILL" in run.error["evalue"]
    assert kernel.value("__import__('sys').last_value.kind") == "runner_died"


def test_timeout_interrupts_the_cell_and_fails_the_job(kernel, client):
    run = kernel.execute("%%remote timeout=1\nimport time\ntime.sleep(60)", timeout=30)

    assert run.error["ename"] == "RemoteError"
    assert "timeout of 1 s" in run.error["evalue"]
    assert kernel.value("__import__('sys').last_value.kind") == "timeout"
    job_id = kernel.value("__import__('sys').last_value.job_id")
    info = client.get_job(job_id)
    assert info.state == pb.FAILED and "timeout" in info.message


def test_remote_cancel_cancels_a_detached_job(kernel, client):
    kernel.ok("%%remote detach=True\n" + SPINNER)
    kernel.ok("job = _")
    job_id = kernel.value("job.id")
    wait_until(lambda: client.get_job(job_id).state == pb.RUNNING, 60, what="the job to run")

    run = kernel.ok(f"%remote_cancel {job_id}")
    assert run.stdout.strip() == f"{job_id}: cancelled"
    info = client.get_job(job_id)
    assert info.state == pb.CANCELLED and "%remote_cancel" in info.message
    assert kernel.value("job.status()") == "cancelled"


def test_remote_attach_of_an_unknown_job_says_so(kernel):
    run = kernel.execute("%remote_attach job-nope")
    assert run.error["ename"] == "JobNotFoundError"
    assert "job-nope" in run.error["evalue"] and "remotecell jobs" in run.error["evalue"]
    # One sentence, no gRPC trace.
    assert run.error["traceback"] == [f"JobNotFoundError: {run.error['evalue']}"]
