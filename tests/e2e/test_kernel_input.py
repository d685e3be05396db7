"""``input()`` and ``getpass()`` in a remote cell ask in the notebook, through a real
Jupyter kernel whose client answers on the stdin channel, as a front end would."""

from __future__ import annotations

import queue
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import Execution, wait_until

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError, JobNotFoundError, RemoteCellError

pytestmark = pytest.mark.kernel

LOCAL_SENTENCE = "raw_input was called, but this frontend does not support input requests."


class Answerer:
    """The front end's stdin side: takes the kernel's input requests and answers them
    with ``answers`` in order (with None, leaves the request open)."""

    def __init__(self, kernel: Any, answers: list[str | None]) -> None:
        self.kc = kernel.kc
        self.answers = list(answers)
        self.requests: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_stdin_msg(timeout=0.2)
            except queue.Empty:
                continue
            if msg["msg_type"] != "input_request":
                continue
            self.requests.put(msg["content"])
            answer = self.answers.pop(0) if self.answers else None
            if answer is not None:
                self.kc.input(answer)

    def request(self, timeout: float = 60.0) -> dict[str, Any]:
        return self.requests.get(timeout=timeout)

    def answer(self, text: str) -> None:
        self.kc.input(text)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class InBackground:
    """Runs a cell from a thread, so the test can act while it waits for input."""

    def __init__(self, kernel: Any, code: str) -> None:
        self.result: list[Execution] = []
        self._thread = threading.Thread(
            target=lambda: self.result.append(kernel.execute(code, 120)), daemon=True
        )
        self._thread.start()

    def wait(self) -> Execution:
        self._thread.join(120)
        assert self.result, "the cell did not finish"
        return self.result[0]


def _text(execution: Execution) -> str:
    error = execution.error or {}
    return execution.stdout + execution.stderr + "\n".join(error.get("traceback", []))


def _waiting_request(client: Any) -> pb.JobEvent:
    """The running job's input_request event (waits for the job and its request)."""
    job = wait_until(
        lambda: next((j for j in client.list_jobs() if j.state == pb.RUNNING), None),
        60,
        interval=0.1,
        what="a running job",
    )
    stream = client.attach(job.job_id)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            event = stream.next(timeout=1)
            if event is not None and event.HasField("input_request"):
                return event
    finally:
        stream.close()
    raise AssertionError(f"job {job.job_id} asked for no input")


def test_input_asks_in_the_notebook_and_the_answer_comes_back(kernel):
    answerer = Answerer(kernel, ["Ada"])
    try:
        result = kernel.execute(
            '%%remote\nprint("before", flush=True)\nname = input("name? ")\nprint("hello", name)',
            120,
        )
    finally:
        answerer.stop()
    assert result.reply["status"] == "ok", _text(result)
    request = answerer.request(1)
    assert request["prompt"] == "name? "
    assert request["password"] is False
    assert "before" in result.stdout and "hello Ada" in result.stdout
    assert kernel.value("name") == "Ada"


def test_getpass_asks_without_echo_and_the_answer_is_never_stored(kernel, control_plane):
    answerer = Answerer(kernel, ["hunter2-s3cret"])
    try:
        result = kernel.execute(
            # Not assigned: a name the cell assigns comes back, and is stored with its result.
            '%%remote\nimport getpass\nprint(len(getpass.getpass("pw: ")))',
            120,
        )
    finally:
        answerer.stop()
    assert result.reply["status"] == "ok", _text(result)
    request = answerer.request(1)
    assert request["prompt"] == "pw: "
    assert request["password"] is True
    assert "14" in result.stdout
    assert "hunter2-s3cret" not in _text(result)
    # Not in the control plane's store either (the database and its WAL).
    for path in Path(control_plane.data_dir).rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert b"hunter2-s3cret" not in path.read_bytes(), path


def test_a_front_end_without_input_gets_the_local_kernels_error(kernel):
    kernel.kc.allow_stdin = False
    local = kernel.execute('input("x? ")')
    assert local.error is not None and local.error["evalue"] == LOCAL_SENTENCE
    remote = kernel.execute('%%remote\ninput("x? ")', 120)
    assert remote.reply["status"] == "error"
    text = _text(remote)
    assert "StdinNotImplementedError" in text and LOCAL_SENTENCE in text
    assert not re.search(r"^EOFError", re.sub(r"\x1b\[[0-9;]*m", "", text), re.M)
    getpass_remote = kernel.execute('%%remote\nimport getpass\ngetpass.getpass("pw: ")', 120)
    local_getpass = kernel.execute('import getpass\ngetpass.getpass("pw: ")')
    assert local_getpass.error is not None
    assert local_getpass.error["evalue"] in _text(getpass_remote)


def test_bad_answers_get_one_clear_sentence(kernel, client):
    answerer = Answerer(kernel, [None])
    try:
        cell = InBackground(kernel, '%%remote\nname = input("name? ")\nprint("got", name)')
        answerer.request()
        event = _waiting_request(client)
        with pytest.raises(JobNotFoundError, match="no job 'nope'"):
            client.answer_input("nope", 1, "x")
        with pytest.raises(ConfigError, match="at most 65536 characters"):
            client.answer_input(event.job_id, event.seq, "x" * 70_000)
        with pytest.raises(RemoteCellError, match=f"waits for no answer to event {event.seq + 5}"):
            client.answer_input(event.job_id, event.seq + 5, "x")
        answerer.answer("Grace")
        result = cell.wait()
    finally:
        answerer.stop()
    assert result.reply["status"] == "ok", _text(result)
    assert "got Grace" in result.stdout
    with pytest.raises(RemoteCellError, match="has ended; it waits for no input"):
        client.answer_input(event.job_id, event.seq, "again")
    # A running job that asks nothing takes no answer either.
    cell = InBackground(kernel, "%%remote\nimport time\nprint('up', flush=True)\ntime.sleep(30)")
    job = wait_until(
        lambda: next((j for j in client.list_jobs() if j.state == pb.RUNNING), None),
        60,
        interval=0.1,
        what="a running job",
    )
    with pytest.raises(RemoteCellError, match="not waiting for input"):
        client.answer_input(job.job_id, 1, "x")
    client.cancel(job.job_id)
    cell.wait()


def test_a_cancel_while_the_cell_waits_for_input_ends_it(kernel, client):
    answerer = Answerer(kernel, [None])
    try:
        cell = InBackground(kernel, '%%remote\nname = input("name? ")')
        answerer.request()
        event = _waiting_request(client)
        started = time.monotonic()
        reply = client.cancel(event.job_id, "stop asking")
        # The wait is interrupted like any line of the cell: no kill after the grace.
        assert reply.state == pb.CANCELLED
        assert time.monotonic() - started < 10
        with pytest.raises(RemoteCellError, match="has ended"):
            client.answer_input(event.job_id, event.seq, "late")
        answerer.answer("late")  # the notebook's prompt was still open
        result = cell.wait()
    finally:
        answerer.stop()
    assert result.reply["status"] == "error"
    assert "cancelled" in _text(result).lower()
    assert kernel.value("1 + 1") == 2
    # An interrupt of the kernel while it asks cancels the job too, and the runner is free.
    answerer = Answerer(kernel, [None])
    try:
        cell = InBackground(kernel, '%%remote\nname = input("again? ")')
        answerer.request()
        kernel.interrupt()
        result = cell.wait()
    finally:
        answerer.stop()
    assert result.reply["status"] == "error"
    wait_until(
        lambda: all(j.state != pb.RUNNING for j in client.list_jobs()), 30, what="the job's end"
    )
    assert [j.state for j in client.list_jobs()][:1] == [pb.CANCELLED]
    assert "ok" in kernel.ok("%%remote\nprint('ok')").stdout
