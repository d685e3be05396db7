"""Executing a scheduled notebook on a runner: top to bottom in a fresh local kernel, with
the run's environment, as ``remotecell run`` does (``remotecell/_notebook.py``), and its
HTML for the run's page.

nbclient's own loop would install SIGINT and SIGTERM handlers for the length of the run
(and leave Python's default SIGINT handler behind), which would take the runner's cancel
(a SIGINT to its main thread, ``_shell.py``) away from it. So the notebook runs on a
thread of its own with its own event loop, where nbclient installs no handlers, and the
calling thread waits: a ``KeyboardInterrupt`` there, or the run's timeout, stops the run
and kills the kernel before this returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html as html_escape
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from remotecell._notebook import TIMED_OUT, Failed, _first_line, _ipc_kernel_config, _output_text
from remotecell._proto import pb
from remotecell.contract.errors import ConfigError
from remotecell.contract.schedules import check_notebook
from remotecell.contract.values import content_hash

log = logging.getLogger("remotecell")

#: ``ename`` of the error a run that ran past its whole-run timeout ends with.
RUN_TIMED_OUT = "NotebookTimeoutError"
#: ``ename`` of a run whose kernel died (a cell crashed it, or it ran out of memory).
KERNEL_DIED = "DeadKernelError"
#: The kernel runs in the runner's own interpreter (``python`` in its kernelspec is
#: ``sys.executable``): the notebook's kernelspec names the author's kernel, not the
#: runner's image.
KERNEL_NAME = "python3"
#: Seconds a cancelled or timed-out run's thread may take to stop its kernel before the
#: kernel's process group is killed from here.
_STOP_WAIT_S = 15.0


@dataclass(frozen=True)
class NotebookOutcome:
    """How a notebook's run ended."""

    #: The executed notebook; on a failure, up to and including the cell that failed.
    notebook: nbformat.NotebookNode
    ok: bool
    #: The failed (or, at a timeout, running) cell's index in ``notebook.cells``.
    failed_cell: int | None
    #: That cell's first line.
    failed_line: str
    #: ``"ename: evalue"``; empty when ``ok``.
    error: str
    #: Seconds the run took: the kernel's start, the cells, the kernel's shutdown.
    duration: float
    #: ``notebook`` as a standalone HTML page (images embedded; nbconvert's lab template).
    html: bytes


@dataclass
class _State:
    running: Failed | None = None  # the cell that runs now
    failed: Failed | None = None
    error: str = ""
    raised: BaseException | None = None
    kernel_pid: int | None = None
    kernel_pgid: int | None = None


def run_notebook(
    nb: nbformat.NotebookNode,
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float | None,
    cell_timeout: int | None,
    on_output: Callable[[str], None] | None = None,
) -> NotebookOutcome:
    """Runs the notebook's code cells in order in a fresh local kernel, in ``cwd``, with
    ``os.environ`` and ``env`` as its environment; stops at the first cell that raises
    (a cell tagged ``raises-exception`` may raise).

    ``nb`` is not changed. ``cell_timeout`` seconds: a cell running longer is interrupted
    and fails the run. ``timeout`` seconds: the whole run stops there (the kernel is
    killed) and fails. ``on_output`` gets each code cell's outputs as text as the cell
    ends, on the run's own thread (an exception it raises is logged, not raised).

    Raises:
        KeyboardInterrupt: the calling thread was interrupted (a cancel); the kernel has
            been stopped.
        ConfigError: the runner has no ``python3`` kernel (ipykernel is missing).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    nb = copy.deepcopy(nb)
    state = _State()

    def on_cell_execute(cell: Any, cell_index: int, **_: Any) -> None:
        state.running = Failed(cell_index, _first_line(cell), "was running")

    def on_cell_executed(cell: Any, cell_index: int, **_: Any) -> None:
        if on_output is None:
            return
        texts = [t for t in (_output_text(o) for o in cell.get("outputs", [])) if t]
        if not texts:
            return
        try:
            on_output("\n".join([f"--- [{cell_index}] {_first_line(cell)}", *texts]) + "\n")
        except Exception:
            log.exception("on_output failed for cell [%d]", cell_index)

    def on_cell_error(cell: Any, cell_index: int, execute_reply: Any = None, **_: Any) -> None:
        if "raises-exception" in cell.metadata.get("tags", []):
            return
        content = (execute_reply or {}).get("content", {})
        state.failed = Failed(cell_index, _first_line(cell))
        state.error = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"

    def on_notebook_start(**_: Any) -> None:
        pid, pgid = _kernel_ids(client.km)
        state.kernel_pid, state.kernel_pgid = pid, pgid

    sockets = Path(tempfile.mkdtemp(prefix="rc-nb-"))  # private (0700), short for sockets
    client = NotebookClient(
        nb,
        timeout=cell_timeout,
        kernel_name=KERNEL_NAME,
        allow_errors=False,
        interrupt_on_timeout=True,
        error_on_timeout={
            "ename": TIMED_OUT,
            "evalue": f"the cell did not finish within {cell_timeout} s (the cell timeout)",
            "traceback": [],
        },
        on_cell_execute=on_cell_execute,
        on_cell_executed=on_cell_executed,
        on_cell_error=on_cell_error,
        on_notebook_start=on_notebook_start,
        config=_ipc_kernel_config(sockets),
        resources={"metadata": {"path": str(cwd)}},
    )
    km = client.create_kernel_manager()  # here, to find its process after a cancel
    loop = asyncio.new_event_loop()
    task = loop.create_task(client.async_execute(env={**os.environ, **env}))

    def work() -> None:
        try:
            loop.run_until_complete(task)
        except BaseException as err:  # handed to the calling thread
            state.raised = err
        finally:
            _close(loop)

    thread = threading.Thread(target=work, name="notebook-run", daemon=True)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    timed_out = False
    try:
        thread.start()
        while thread.is_alive():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                timed_out = True
                break
            thread.join(0.5 if left is None else min(left, 0.5))
        if timed_out:
            _stop(client, km, loop, task, thread, state)
    except BaseException:  # KeyboardInterrupt (a cancel), SystemExit: stop, then re-raise
        _stop(client, km, loop, task, thread, state)
        raise
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    duration = time.monotonic() - start

    raised = state.raised
    if timed_out:
        state.failed = state.running
        state.error = (
            f"{RUN_TIMED_OUT}: the notebook did not finish within {timeout:g} s "
            "(the run's timeout); its kernel was stopped"
        )
    elif isinstance(raised, DeadKernelError):
        state.failed = state.running
        state.error = f"{KERNEL_DIED}: the kernel died while the cell ran (out of memory?)"
    elif isinstance(raised, CellExecutionError):
        pass  # on_cell_error said which cell and why
    elif raised is not None:
        _raise_setup_error(raised)
    failed = state.failed
    return NotebookOutcome(
        notebook=nb,
        ok=failed is None and not state.error,
        failed_cell=failed.index if failed else None,
        failed_line=failed.line if failed else "",
        error=state.error,
        duration=duration,
        html=to_html(nb, cwd),
    )


def _raise_setup_error(raised: BaseException) -> None:
    from jupyter_client.kernelspec import NoSuchKernel

    from remotecell.contract.errors import ConfigError

    if isinstance(raised, NoSuchKernel):
        raise ConfigError(
            f"this runner has no {KERNEL_NAME!r} Jupyter kernel: its image needs ipykernel"
        ) from None
    raise raised


def _kernel_ids(km: Any) -> tuple[int | None, int | None]:
    provisioner = getattr(km, "provisioner", None)
    return getattr(provisioner, "pid", None), getattr(provisioner, "pgid", None)


def _stop(
    client: Any,
    km: Any,
    loop: asyncio.AbstractEventLoop,
    task: asyncio.Task[Any],
    thread: threading.Thread,
    state: _State,
) -> None:
    """Stops a run from the calling thread: cancels it on its loop, where nbclient shuts
    the kernel down (at once), waits for that, and kills the kernel's process group if it
    is still there. Another KeyboardInterrupt meanwhile waits until the kernel is gone."""
    if thread.ident is None:  # interrupted before the run's thread started
        task.cancel()
        _close(loop)
        return
    pid, pgid = _kernel_ids(km)
    pid, pgid = pid or state.kernel_pid, pgid or state.kernel_pgid
    client.shutdown_kernel = "immediate"
    with contextlib.suppress(RuntimeError):  # the loop closed: the run ended meanwhile
        loop.call_soon_threadsafe(task.cancel)
    deadline = time.monotonic() + _STOP_WAIT_S
    interrupted = False
    while thread.is_alive() and time.monotonic() < deadline:
        try:
            thread.join(0.2)
        except KeyboardInterrupt:
            interrupted = True
    if pid is None:
        pid, pgid = _kernel_ids(km)
    _kill(pid, pgid)
    if interrupted:
        raise KeyboardInterrupt


def _kill(pid: int | None, pgid: int | None) -> None:
    """Kills what is left of a kernel: its process group (the kernel started one), else
    its process."""
    if pid is None:
        return
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            proc.wait(0)
            return
    except Exception:  # gone already (or reaped)
        return
    with contextlib.suppress(OSError):
        if pgid and pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(5)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Closes the run's loop with nothing left pending on it."""
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:  # closing anyway
        log.debug("closing a notebook run's loop", exc_info=True)
    finally:
        loop.close()


def to_html(nb: nbformat.NotebookNode, cwd: Path | None = None) -> bytes:
    """The notebook as one HTML page: nbconvert's lab template, its CSS inlined and
    images embedded, made without the network (the page's MathJax and require.js
    ``<script src>`` load when it is viewed, and only those need the network)."""
    try:
        from nbconvert import HTMLExporter

        exporter = HTMLExporter(template_name="lab", embed_images=True)
        resources = {"metadata": {"path": str(cwd)}} if cwd is not None else None
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        return body.encode("utf-8")
    except Exception as err:  # the run's outcome matters more than its page
        log.warning("could not make the notebook's HTML", exc_info=True)
        why = html_escape.escape(f"{type(err).__name__}: {err}")
        return (
            "<!DOCTYPE html><html><body><p>The executed notebook could not be shown as "
            f"HTML ({why}); download the .ipynb instead.</p></body></html>"
        ).encode()


# ----------------------------------------------------------------------- as a task


def run_task(
    task: pb.NotebookTask,
    emit: Callable[[Any], None],
    fetch: Callable[[str], Any],
    upload: Callable[[dict], int],
    cwd: Path,
) -> pb.Finished:
    """Runs a job's notebook (``JobSpec.notebook``) in the runner's environment (the
    task's ``env`` and secrets are in ``os.environ`` already): each cell's output is the
    job's stdout as it ends; the executed notebook and its HTML go up as blobs, named in
    the returned ``Finished``. A failing cell fails the job, keeping the notebook up to
    it.

    Raises:
        KeyboardInterrupt: the task was cancelled; the kernel has been stopped.
    """
    try:
        nb = check_notebook(bytes(fetch(task.notebook_blob)))
    except ConfigError as err:
        emit(pb.Error(kind=pb.Error.SETUP, type_name="ConfigError", message=str(err)))
        return pb.Finished(state=pb.FAILED, message=str(err))

    def on_output(text: str) -> None:
        emit(pb.Stream(name=pb.Stream.STDOUT, text=text))

    cell_timeout = max(1, math.ceil(task.cell_timeout_s)) if task.cell_timeout_s else None
    outcome = run_notebook(
        nb, cwd=cwd, env={}, timeout=None, cell_timeout=cell_timeout, on_output=on_output
    )
    executed = nbformat.writes(outcome.notebook).encode()
    notebook_id, html_id = content_hash(executed), content_hash(outcome.html)
    upload({notebook_id: memoryview(executed), html_id: memoryview(outcome.html)})
    result = pb.NotebookResult(
        notebook_blob=notebook_id,
        html_blob=html_id,
        failed_cell=-1 if outcome.failed_cell is None else outcome.failed_cell,
        failed_line=outcome.failed_line,
        error=outcome.error,
        duration_s=outcome.duration,
    )
    if outcome.ok:
        return pb.Finished(state=pb.SUCCEEDED, notebook=result)
    where = f"cell [{outcome.failed_cell}] {outcome.failed_line}".rstrip()
    name, _, message = outcome.error.partition(": ")
    emit(pb.Error(kind=pb.Error.USER_CODE, type_name=name, message=f"{where}: {message}"))
    return pb.Finished(state=pb.FAILED, message=f"{where}: {outcome.error}", notebook=result)
