"""`remotecell run NOTEBOOK`: execute a notebook headlessly and print its outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat


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
        import re

        text = (
            "\n".join(output.get("traceback", []))
            or f"{output.get('ename')}: {output.get('evalue')}"
        )
        return re.sub(r"\x1b\[[0-9;]*m", "", text)
    return ""


def execute(
    path: Path,
    *,
    timeout: int = 600,
    kernel: str = "python3",
    output: Path | None = None,
    echo: Callable[[str], None] = print,
) -> bool:
    """Runs every cell in a fresh kernel; prints each cell's outputs. False if a cell failed."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(path.parent)}}
    )
    ok = True
    try:
        client.execute()
    except CellExecutionError:
        ok = False
    finally:
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            texts = [t for t in (_output_text(o) for o in cell.get("outputs", [])) if t]
            if texts:
                echo(f"--- [{index}] {cell.source.splitlines()[0] if cell.source else ''}")
                for text in texts:
                    echo(text)
        if output is not None:
            nbformat.write(nb, output)
    return ok
