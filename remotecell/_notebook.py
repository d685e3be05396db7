"""`remotecell run NOTEBOOK`: execute a notebook headlessly and print its outputs."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

#: ``ename`` of the error a cell that ran past its timeout ends with (it is interrupted).
TIMED_OUT = "CellTimeoutError"


@dataclass
class Failed:
    """A code cell that did not succeed: its index, first line, and how it ended."""

    index: int
    line: str
    why: str = "failed"  # or "did not finish within N s", "killed the kernel"

    def __str__(self) -> str:
        return f"cell [{self.index}] {self.why}: {self.line}"


@dataclass
class NotebookRun:
    """What became of a notebook's code cells: those that did not succeed, and those never
    run."""

    failed: list[Failed] = field(default_factory=list)
    not_run: int = 0
    #: The run stopped at its last failed cell whatever --allow-errors says (a dead kernel).
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One or two lines naming the failed cells; empty when none failed."""
        if not self.failed:
            return ""
        if len(self.failed) == 1:
            text = str(self.failed[0])
        else:
            cells = "; ".join(
                f"[{f.index}] {f.line}" + ("" if f.why == "failed" else f" ({f.why})")
                for f in self.failed
            )
            text = f"{len(self.failed)} cells failed: {cells}"
        if self.not_run:
            were = "cell after it was" if self.not_run == 1 else "cells after it were"
            text += f"\n{self.not_run} code {were} not run"
            if not self.stopped:
                text += " (--allow-errors runs every cell)"
        return text


def _first_line(cell: Any) -> str:
    return cell.source.splitlines()[0] if cell.source else ""


def _output_text(output: Any) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return str(output.get("text", "")).rstrip("\n")
    if kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        if "text/plain" in data:
            return str(data["text/plain"])
        return "[" + ", ".join(sorted(data)) + "]"
    if kind == "error":
        text = (
            "\n".join(output.get("traceback", []))
            or f"{output.get('ename')}: {output.get('evalue')}"
        )
        return re.sub(r"\x1b\[[0-9;]*m", "", text)
    return ""


def _ipc_kernel_config(directory: Path) -> Any:
    """Kernel manager settings for IPC sockets in `directory`: a local kernel needs no TCP,
    and ipykernel warns about unencrypted TCP at every start."""
    from traitlets.config import Config

    return Config(
        KernelManager={
            "transport": "ipc",
            "ip": str(directory / "kernel"),  # with IPC, the socket path prefix
            "connection_file": str(directory / "kernel.json"),
        }
    )


def execute(
    path: Path,
    *,
    timeout: int = 600,
    kernel: str = "python3",
    output: Path | None = None,
    allow_errors: bool = False,
    echo: Callable[[str], None] = print,
) -> NotebookRun:
    """Runs the cells in a fresh local kernel and prints each cell's outputs.

    Stops at the first cell that raises, unless `allow_errors`; a cell tagged
    `raises-exception` may raise either way. A cell that runs past `timeout` seconds is
    interrupted and counts as failed; one that kills its kernel stops the run.

    Raises:
        ConfigError: there is no kernel named `kernel`.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    from remotecell.contract.errors import ConfigError

    nb = nbformat.read(path, as_version=4)
    run = NotebookRun()
    running: list[Failed] = []  # the cell that runs now

    def on_cell_execute(cell: Any, cell_index: int, **_: Any) -> None:
        running[:] = [Failed(cell_index, _first_line(cell), "killed the kernel")]

    def on_cell_error(cell: Any, cell_index: int, execute_reply: Any = None, **_: Any) -> None:
        content = (execute_reply or {}).get("content", {})
        if content.get("ename") == TIMED_OUT:
            run.failed.append(Failed(cell_index, _first_line(cell), content["evalue"]))
        elif "raises-exception" not in cell.metadata.get("tags", []):
            run.failed.append(Failed(cell_index, _first_line(cell)))

    # mkdtemp is private to this user (0700); a short path keeps socket paths under the limit.
    sockets = Path(tempfile.mkdtemp(prefix="rc-nb-"))
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        allow_errors=allow_errors,
        # A cell past its timeout is interrupted, as in a notebook, and fails like a cell
        # that raised: the run stops there unless allow_errors.
        interrupt_on_timeout=True,
        error_on_timeout={
            "ename": TIMED_OUT,
            "evalue": f"did not finish within {timeout} s (--timeout sets the seconds a "
            "cell may run)",
            "traceback": [],
        },
        on_cell_execute=on_cell_execute,
        on_cell_error=on_cell_error,
        config=_ipc_kernel_config(sockets),
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except NoSuchKernel:
        installed = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
        raise ConfigError(
            f"no Jupyter kernel named {kernel!r}; installed: {installed} "
            "(`jupyter kernelspec list` shows them)"
        ) from None
    except (CellExecutionError, DeadKernelError) as err:
        if isinstance(err, DeadKernelError) and running:
            run.failed.append(running[0])
            run.stopped = True
        last = run.failed[-1].index
        run.not_run = sum(1 for cell in nb.cells[last + 1 :] if cell.cell_type == "code")
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            texts = [t for t in (_output_text(o) for o in cell.get("outputs", [])) if t]
            if texts:
                echo(f"--- [{index}] {_first_line(cell)}")
                for text in texts:
                    echo(text)
        if output is not None:
            nbformat.write(nb, output)
    return run
