"""Runs a notebook as written and with its code cells under ``%%remote``, and compares the
outputs the two runs save, as a reader of the saved notebooks would.

What legitimately differs between two runs of the same code is made equal first: execution
counts, how a stream was split into messages (and the order of stdout and stderr, which a
kernel does not define), object addresses, widget model ids, the file a warning names, and a
traceback's frames (an error is its ``ename``, ``evalue`` and the code line of its last frame).
Everything else (text, rich data, PNG bytes, metadata, order) must match.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import hashlib
import json
import os
import queue
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent / "notebooks" / "like_local"

#: The cells put before a notebook's own when it runs remotely (and left out of the comparison).
REMOTE_SETUP = ["%load_ext remotecell", '%config RemoteMagics.monitor = "off"']

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_WARNING_PLACE = re.compile(r"^\S[^\n]*?:\d+: (\w*Warning): ", re.M)
_FRAME_LINE = re.compile(r"^-+>\s*\d+\s?(.*)$", re.M)


def notebooks() -> list[Path]:
    return sorted(ROOT.rglob("*.ipynb"))


# ----------------------------------------------------------------------------- running


class _Client(NotebookClient):
    """nbclient as ``remotecell run`` uses it, which can also answer ``input()`` as a front
    end would: through the kernel's stdin channel, with ``answers`` in order."""

    def __init__(self, nb: Any, answers: list[str] | None, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self._answers = None if answers is None else list(answers)
        self.input_requests: list[dict[str, Any]] = []
        self._answering: asyncio.Task[None] | None = None

    async def async_start_new_kernel_client(self) -> Any:
        kc = await super().async_start_new_kernel_client()
        if self._answers is not None:
            kc.allow_stdin = True
            self._answering = asyncio.ensure_future(self._answer(kc))
        return kc

    async def _answer(self, kc: Any) -> None:
        while True:
            try:
                msg = await kc.get_stdin_msg(timeout=0.2)
            except queue.Empty:
                continue
            if msg["msg_type"] == "input_request":
                content = msg["content"]
                self.input_requests.append(
                    {"prompt": content["prompt"], "password": content["password"]}
                )
                kc.input(self._answers.pop(0) if self._answers else "")

    async def run(self, env: dict[str, str]) -> None:
        try:
            await self.async_execute(env=env)
        finally:
            if self._answering is not None:
                self._answering.cancel()


def as_remote(nb: Any, remote: Callable[[int], bool] = lambda index: True) -> Any:
    """A copy of ``nb`` whose code cells (those ``remote`` picks by their index among the
    code cells) run under ``%%remote``, after the setup cells. Blank cells stay blank: nbclient
    skips them, and IPython refuses a cell magic with an empty body."""
    nb = copy.deepcopy(nb)
    index = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if remote(index):
            cell.source = "%%remote\n" + cell.source
        index += 1
    setup = [nbformat.v4.new_code_cell(source) for source in REMOTE_SETUP]
    for n, cell in enumerate(setup):
        cell["id"] = f"remote-setup-{n}"
    nb.cells = setup + nb.cells
    return nb


def execute(
    path: Path,
    env: dict[str, str],
    *,
    remote: Callable[[int], bool] | None = None,
    answers: list[str] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Runs ``path`` in a fresh kernel whose working directory is the notebook's own (as
    ``remotecell run`` does) and returns the notebook with its outputs, and the input
    requests answered (``answers=None``: the front end allows no input, like nbclient).
    ``remote``: which code cells run under ``%%remote`` (None: none, and no setup cells)."""
    nb = nbformat.read(path, as_version=4)
    if remote is not None:
        nb = as_remote(nb, remote)
    client = _Client(
        nb,
        answers,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    asyncio.run(client.run({**os.environ, **env}))
    if remote is not None:
        setup = nb.cells[: len(REMOTE_SETUP)]
        for cell in setup:
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, f"setup cell {cell.source!r} failed: {errors}"
        nb.cells = nb.cells[len(REMOTE_SETUP) :]
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = cell.source.removeprefix("%%remote\n")
    return nb, client.input_requests


# ------------------------------------------------------------------------- normalising


class _ModelIds:
    """Widget model ids in order of first sight: the same widgets get the same names."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, model_id: str) -> str:
        return self.names.setdefault(model_id, f"model-{len(self.names)}")

    def replace(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {self.replace(k): self.replace(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.replace(v) for v in value]
        if isinstance(value, str):
            if value.startswith("IPY_MODEL_"):
                return "IPY_MODEL_" + self(value.removeprefix("IPY_MODEL_"))
            if value in self.names:
                return self.names[value]
        return value


def _stream_text(text: str) -> str:
    # The file is the kernel's cell file or the runner's; the line a remote cell counts
    # includes its %%remote line. The source line the warning quotes after it is compared.
    return _WARNING_PLACE.sub(r"<file>: \1: ", text)


def _error(output: Any) -> dict[str, Any]:
    """An error as its name, value, the line of the notebook's own code it came from (IPython
    formats each frame as one traceback entry, the cell's own as "Cell In[n], line m"), and
    whether it was raised there or in a library (whose files differ between machines)."""
    frames = [_ANSI.sub("", entry) for entry in output.get("traceback", [])]
    frames = [frame for frame in frames if _FRAME_LINE.search(frame)]
    in_cell = [frame for frame in frames if frame.startswith("Cell In[")]
    return {
        "output_type": "error",
        "ename": output.get("ename"),
        "evalue": output.get("evalue"),
        "line in the cell": _FRAME_LINE.findall(in_cell[-1])[-1].strip() if in_cell else None,
        "raised in": "the cell" if frames and frames[-1] in in_cell else "a library",
    }


def _data(data: dict[str, Any], ids: _ModelIds) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mime, value in data.items():
        if mime == WIDGET_VIEW:
            value = {**value, "model_id": ids(value["model_id"])}
        elif mime == "text/plain" and isinstance(value, str):
            value = _ADDRESS.sub(" at 0x…", value)
        out[mime] = value
    return out


def normal_outputs(outputs: list[Any], ids: _ModelIds) -> list[dict[str, Any]]:
    normal: list[dict[str, Any]] = []
    for output in outputs:
        kind = output["output_type"]
        if kind == "stream":
            if not (normal and normal[-1]["output_type"] == "stream"):
                normal.append({"output_type": "stream", "stdout": "", "stderr": ""})
            normal[-1][output["name"]] += _stream_text(output["text"])
        elif kind == "error":
            normal.append(_error(output))
        else:  # display_data, execute_result
            normal.append(
                {
                    "output_type": kind,
                    "data": _data(output.get("data", {}), ids),
                    "metadata": dict(output.get("metadata", {})),
                }
            )
    return normal


def saved(nb: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """The notebook's saved outputs, normalised: one (label, outputs) per code cell, and the
    widget state nbclient saves in the notebook's metadata last."""
    ids = _ModelIds()
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            first = cell.source.strip().splitlines()[0] if cell.source.strip() else "(blank)"
            cells.append((f"cell {index}: {first}", normal_outputs(cell.outputs, ids)))
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    models = [
        {"model_id": ids(model_id), **ids.replace(dict(model))}
        for model_id, model in sorted(state.items(), key=lambda item: ids(item[0]))
    ]
    cells.append(("the notebook's widget state", models))
    return cells


# ----------------------------------------------------------------------------- comparing


def _lines(outputs: list[dict[str, Any]]) -> list[str]:
    """Outputs as readable lines for a diff (binary data as its size and digest)."""
    lines: list[str] = []
    for output in outputs:
        shown = dict(output)
        if "data" in shown:
            shown["data"] = {
                mime: (
                    f"<{len(value)} chars, sha256 {hashlib.sha256(value.encode()).hexdigest()[:12]}>"
                    if mime.startswith("image/") and mime != "image/svg+xml"
                    else value
                )
                for mime, value in shown["data"].items()
            }
        lines.extend(json.dumps(shown, indent=1, ensure_ascii=False, sort_keys=True).splitlines())
    return lines


def differences(local: Any, remote: Any) -> list[str]:
    """One readable diff (local vs remote) per cell whose saved outputs differ."""
    found = []
    mine, theirs = saved(local), saved(remote)
    assert [label for label, _ in mine] == [label for label, _ in theirs], "not the same cells"
    for (label, a), (_, b) in zip(mine, theirs, strict=True):
        if a != b:
            diff = difflib.unified_diff(_lines(a), _lines(b), "local", "remote", lineterm="")
            found.append(f"{label}\n" + "\n".join(diff))
    return found


def report(name: str, found: list[str]) -> str:
    return f"{name}: {len(found)} difference(s), local vs remote\n\n" + "\n\n".join(found)
