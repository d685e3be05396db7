"""Display handles across cells, through a real kernel and runner: the same cells run
locally and then under ``%%remote`` in one kernel send the same displays and updates,
and leave the same outputs in the notebook (the first display changes in place).

A function defined in a remote cell that calls ``get_ipython()`` or holds ``sys.stdout``
comes back, and calls the notebook's shell and writes to the notebook's stream."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.kernel

#: (cell, whether it runs under %%remote in the second pass). The first pass runs all
#: of them in the kernel; ids are random, so each pass's are numbered as they appear.
_CELLS: list[tuple[str, bool]] = [
    ("import os\nfrom IPython.display import HTML, DisplayHandle, display, update_display", True),
    (
        "h = display('first', display_id=True)\nother = display(HTML('<i>b</i>'), display_id=True)",
        True,
    ),
    ("h.update('second')", True),
    ("update_display(HTML('<b>third</b>'), display_id=h.display_id)", True),
    (
        "def refresh(value):\n"
        "    get_ipython().display_pub.publish(\n"
        "        {'text/plain': repr(value)}, transient={'display_id': h.display_id}, update=True\n"
        "    )",
        True,
    ),
    ("refresh('fourth')", True),
    ("refresh('fifth')\nother.update('other again')", False),  # what came back, here
    ("local = display('made here', display_id=True)", False),
    ("local.update('updated there')", True),
    ("h.display('shown again')\nlater = DisplayHandle()", True),
    ("later.display('late')", True),
    ("later.update('late, updated')\nh.update('last')", False),
    ("import sys\ndef say(text, out=sys.stdout):\n    print(text, file=out)", True),
    ("say('hello')", True),
    ("say('hello here')", False),
    ("ran_in = os.getpid()", True),
]


def _sent(run: Any, ids: dict[str, str]) -> list[tuple[str, str, Any]]:
    """The displays, updates and printed text a cell sent (the job monitor's left out)."""
    out: list[tuple[str, str, Any]] = []
    for msg in run.messages:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append((kind, "", content["text"]))
        if kind not in ("display_data", "update_display_data"):
            continue
        display_id = content.get("transient", {}).get("display_id", "")
        if display_id.startswith("remotecell-"):
            continue
        label = ids.setdefault(display_id, f"id{len(ids)}") if display_id else ""
        out.append((kind, label, content["data"]))
    return out


def _saved(sent: list[list[tuple[str, str, Any]]]) -> list[list[Any]]:
    """What the notebook keeps of each cell, as a front end saves it: a display is an
    output of its cell, an update changes every output with its id, in any cell."""
    cells: list[list[list[Any]]] = []
    for messages in sent:
        outputs: list[list[Any]] = []
        for kind, label, data in messages:
            if kind == "update_display_data":
                for cell in [*cells, outputs]:
                    for output in cell:
                        if output[0] == label:
                            output[1] = data
            else:
                outputs.append([label, data])
        cells.append(outputs)
    return [[data for _, data in cell] for cell in cells]


def test_display_handles_across_cells_match_a_local_run(kernel):
    passes: list[list[list[tuple[str, str, Any]]]] = []
    for remote in (False, True):
        ids: dict[str, str] = {}
        sent = []
        for cell, may_be_remote in _CELLS:
            code = f"%%remote\n{cell}" if remote and may_be_remote else cell
            run = kernel.execute(code)
            assert run.reply["status"] == "ok", (code, run.error)
            assert "not brought back" not in run.stderr, (code, run.stderr)
            sent.append(_sent(run, ids))
        passes.append(sent)
    local, remote = passes
    for (cell, _), here, there in zip(_CELLS, local, remote, strict=True):
        assert there == here, cell
    assert _saved(remote) == _saved(local)
    # the first display changed in place: the notebook keeps the last value only
    assert _saved(local)[1][0] == {"text/plain": "'last'"}
    assert kernel.value("ran_in != os.getpid() and isinstance(h, DisplayHandle)") is True
