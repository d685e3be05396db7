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


@dataclass
class NotebookRun:
    """What became of a notebook's code cells: those that raised, and those never run."""

    failed: list[tuple[int, str]] = field(default_factory=list)  # (cell index, first line)
    not_run: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One or two lines naming the failed cells; empty when none failed."""
        if not self.failed:
            return ""
        if len(self.failed) == 1:
            index, line = self.failed[0]
            text = f"cell [{index}] failed: {line}"
        else:
            cells = "; ".join(f"[{index}] {line}" for index, line in self.failed)
            text = f"{len(self.failed)} cells failed: {cells}"
        if self.not_run:
            were = "cell after it was" if self.not_run == 1 else "cells after it were"
            text += f"\n{self.not_run} code {were} not run (--allow-errors runs every cell)"
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
    `raises-exception` may raise either way.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    run = NotebookRun()

    def on_cell_error(cell: Any, cell_index: int, **_: Any) -> None:
        if "raises-exception" not in cell.metadata.get("tags", []):
            run.failed.append((cell_index, _first_line(cell)))

    # mkdtemp is private to this user (0700); a short path keeps socket paths under the limit.
    sockets = Path(tempfile.mkdtemp(prefix="rc-nb-"))
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        allow_errors=allow_errors,
        on_cell_error=on_cell_error,
        config=_ipc_kernel_config(sockets),
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError:
        last = run.failed[-1][0]
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
