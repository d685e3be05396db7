"""Executing a scheduled notebook on a runner (``runner/_notebook_run.py``): its outputs,
its first failure, its environment, its HTML, and that a cancel or a timeout leaves no
kernel behind."""

from __future__ import annotations

import _thread
import base64
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from remotecell._notebook import TIMED_OUT
from remotecell.backend.runner import _notebook_run
from remotecell.backend.runner._notebook_run import (
    KERNEL_DIED,
    RUN_TIMED_OUT,
    NotebookOutcome,
    run_notebook,
    to_html,
)
from remotecell.contract.errors import ConfigError
from remotecell.contract.schedules import inject_parameters

pytestmark = pytest.mark.kernel

# A 1x1 red PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d7"
        "63f8cfc000000301010018dd8db00000000049454e44ae426082"
    )
).decode()


def notebook(*sources: str, tags: dict[int, list[str]] | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(s, metadata={"tags": (tags or {}).get(i, [])})
        for i, s in enumerate(sources)
    ]
    return nb


def run(nb: nbformat.NotebookNode, tmp_path: Path, **kwargs) -> NotebookOutcome:  # type: ignore[no-untyped-def]
    kwargs.setdefault("env", {})
    kwargs.setdefault("timeout", 120)
    kwargs.setdefault("cell_timeout", 60)
    return run_notebook(nb, cwd=tmp_path, **kwargs)


def texts(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def kernels() -> set[int]:
    """This process's child processes that are kernels (its tests start no others)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_injected_params_reach_the_notebook_its_outputs_and_its_html(tmp_path):
    nb = notebook(
        "n = 1\nname = 'default'", "print(f'hello {name} {n * 2}')", tags={0: ["parameters"]}
    )
    nb = inject_parameters(nb, {"name": "scheduled", "n": 21})
    streamed: list[str] = []
    out = run(nb, tmp_path, on_output=streamed.append)
    assert out.ok, out.error
    assert (out.failed_cell, out.failed_line, out.error) == (None, "", "")
    assert [c.metadata.get("tags") for c in out.notebook.cells] == [
        ["parameters"],
        ["injected-parameters"],
        [],
    ]
    assert texts(out.notebook.cells[2]) == "hello scheduled 42\n"
    assert out.notebook.cells[2].execution_count == 3
    assert streamed == ["--- [2] print(f'hello {name} {n * 2}')\nhello scheduled 42\n"]
    html = out.html.decode()
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "hello scheduled 42" in html
    assert 0 < out.duration < 60
    assert nb.cells[2].outputs == []  # the input is not changed
    nbformat.validate(out.notebook)


def test_a_failing_cell_stops_the_run_and_keeps_what_ran(tmp_path):
    nb = notebook(
        "print('first')",
        "raise ValueError('no luck')  # tagged: may raise",
        "x = 1\nprint('second')",
        "1 / 0\nprint('never')",
        "print('not run')",
        tags={1: ["raises-exception"]},
    )
    streamed: list[str] = []
    out = run(nb, tmp_path, on_output=streamed.append)
    assert not out.ok
    assert out.failed_cell == 3
    assert out.failed_line == "1 / 0"
    assert out.error == "ZeroDivisionError: division by zero"
    cells = out.notebook.cells
    assert texts(cells[0]) == "first\n"
    assert cells[1].outputs[0].output_type == "error"  # allowed by its tag
    assert texts(cells[2]) == "second\n"
    assert [o.output_type for o in cells[3].outputs] == ["error"]
    assert cells[3].outputs[0].ename == "ZeroDivisionError"
    assert cells[4].outputs == [] and cells[4].execution_count is None
    assert any(s.startswith("--- [3] 1 / 0\n") and "ZeroDivisionError" in s for s in streamed)
    assert "ZeroDivisionError" in out.html.decode()
    assert "not run" in out.html.decode()  # as source, never as output


def test_the_environment_and_the_directory_reach_the_kernel(tmp_path):
    (tmp_path / "data.txt").write_text("from the run's directory")
    nb = notebook(
        "import os\nprint(os.environ['REMOTECELL_URL'], os.environ['REMOTECELL_TOKEN'])",
        "print('PATH' in os.environ, os.environ.get('RC_FROM_RUNNER'))",
        "print(open('data.txt').read())",
    )
    os.environ["RC_FROM_RUNNER"] = "inherited"
    try:
        out = run(
            nb,
            tmp_path,
            env={"REMOTECELL_URL": "unix:///tmp/cp.sock", "REMOTECELL_TOKEN": "run-scoped"},
        )
    finally:
        del os.environ["RC_FROM_RUNNER"]
    assert out.ok, out.error
    assert texts(out.notebook.cells[0]) == "unix:///tmp/cp.sock run-scoped\n"
    assert texts(out.notebook.cells[1]) == "True inherited\n"
    assert texts(out.notebook.cells[2]) == "from the run's directory\n"


def test_a_cell_past_the_cell_timeout_is_interrupted_and_fails_the_run(tmp_path):
    nb = notebook("import time\ntime.sleep(60)", "print('after')")
    out = run(nb, tmp_path, cell_timeout=2)
    assert not out.ok
    assert out.failed_cell == 0 and out.failed_line == "import time"
    assert out.error.startswith(f"{TIMED_OUT}: the cell did not finish within 2 s")
    assert out.notebook.cells[1].outputs == []
    assert out.duration < 30
    assert not kernels()


def test_a_keyboard_interrupt_cancels_the_run_and_stops_the_kernel(tmp_path):
    before = kernels()
    nb = notebook("import os\nprint(os.getpid())", "import time\ntime.sleep(60)")
    streamed: list[str] = []
    handler = signal.getsignal(signal.SIGINT)

    def interrupt_when_sleeping() -> None:
        # The kernel printed its pid when the sleeping cell has started.
        deadline = time.monotonic() + 60
        while not streamed and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        _thread.interrupt_main()

    timer = threading.Thread(target=interrupt_when_sleeping, daemon=True)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(nb, tmp_path, on_output=streamed.append)
    assert time.monotonic() - started < 40
    timer.join()
    pid = int(streamed[0].splitlines()[1])
    assert gone(pid), f"kernel {pid} is still running"
    assert kernels() == before
    assert signal.getsignal(signal.SIGINT) is handler


def test_the_run_timeout_stops_the_run_and_its_kernel(tmp_path):
    nb = notebook(
        "import os\nprint(os.getpid(), flush=True)",
        "import time\nprint('sleeping', flush=True)\ntime.sleep(60)",
        "print('never')",
    )
    streamed: list[str] = []
    started = time.monotonic()
    out = run(nb, tmp_path, timeout=6, cell_timeout=None, on_output=streamed.append)
    assert time.monotonic() - started < 40
    assert not out.ok
    assert out.failed_cell == 1 and out.failed_line == "import time"
    assert out.error == (
        f"{RUN_TIMED_OUT}: the notebook did not finish within 6 s (the run's timeout); "
        "its kernel was stopped"
    )
    cells = out.notebook.cells
    assert texts(cells[1]) == "sleeping\n"  # the partial output of the cell it stopped
    assert cells[2].outputs == []
    assert "sleeping" in out.html.decode()
    assert gone(int(streamed[0].splitlines()[1]))
    assert not kernels()


def test_a_cell_that_kills_its_kernel_fails_the_run(tmp_path):
    nb = notebook("print('ok')", "import os\nos._exit(1)", "print('never')")
    out = run(nb, tmp_path)
    assert not out.ok
    assert out.failed_cell == 1 and out.failed_line == "import os"
    assert out.error.startswith(f"{KERNEL_DIED}: the kernel died")
    assert texts(out.notebook.cells[0]) == "ok\n"
    assert not kernels()


def test_an_on_output_that_raises_does_not_stop_the_run(tmp_path, caplog):
    def broken(text: str) -> None:
        raise RuntimeError("the log is gone")

    out = run(notebook("print(1)", "print(2)"), tmp_path, on_output=broken)
    assert out.ok, out.error
    assert texts(out.notebook.cells[1]) == "2\n"
    assert "on_output failed for cell [0]" in caplog.text


def test_a_runner_without_the_kernel_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(_notebook_run, "KERNEL_NAME", "no-such-kernel")
    with pytest.raises(ConfigError, match="has no 'no-such-kernel' Jupyter kernel"):
        run(notebook("print(1)"), tmp_path)


def test_the_runs_sigint_handler_is_left_as_it_was(tmp_path):
    # The runner cancels a task with a SIGINT its own handler turns into a
    # KeyboardInterrupt (runner/_shell.py): nbclient must not replace it.
    def mine(signum, frame):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, mine)
    try:
        out = run(notebook("print(1)"), tmp_path)
        assert out.ok
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, old)


def test_the_html_is_made_without_the_network(tmp_path, monkeypatch):
    nb = notebook("print('text out')", "display(...)")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# A *report*"))
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="text out\n")]
    nb.cells[2].outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})
    ]
    tried: list[object] = []
    connect = socket.socket.connect

    def no_network(self, address):  # type: ignore[no-untyped-def]
        if self.family != socket.AF_UNIX:
            tried.append(address)
            raise OSError("no network in this test")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(
        socket, "create_connection", lambda *a, **k: no_network(socket.socket(), a[0])
    )
    html = to_html(nb, tmp_path).decode()
    assert not tried
    assert "could not be shown" not in html
    assert "text out" in html
    assert f"data:image/png;base64,{PNG}" in html
    assert re.search(r"<h1[^>]*>A <em>report</em>", html)
