"""A remote cell's saved outputs are a local cell's: the same notebook run by nbclient,
once locally and once with every cell under ``%%remote``, saves the same outputs (the
job monitor off, or left out of the comparison when it is on)."""

from __future__ import annotations

import re
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.kernel

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

SETUP = (
    "import matplotlib.pyplot as plt\n"
    "from IPython.display import HTML, Markdown, clear_output, display\n"
    "%load_ext remotecell"
)

#: Cells run as they are, and under %%remote.
CELLS = [
    # clear_output(wait=True) as the last thing: what it would clear stays.
    'print("a")\ndisplay("b")\nclear_output(wait=True)',
    # clear_output() without wait clears at once.
    'print("gone")\nclear_output()\nprint("after")',
    # The live-plot loop: it ends with the last plot.
    "losses = []\nfor i in range(3):\n    losses.append(1 / (i + 1))\n"
    "    clear_output(wait=True)\n    plt.plot(losses)\n    plt.show()",
    # Clearing after each plot: the last one stays.
    "for i in range(3):\n    plt.plot([i, i + 1])\n    plt.show()\n    clear_output(wait=True)",
    # Rich displays, unicode, and an Out (a list of lines) before the figure of the cell.
    'display(HTML("<b>bold</b>"), Markdown("*md*"))\nprint("é ✓ 日本")\nplt.plot([1, 2])',
    '"a value"',
    "# a comment alone (IPython refuses a cell magic with an empty body)",
]


def run_notebook(cells: list[str], path: Any) -> list[list[dict[str, Any]]]:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path)}}
    ).execute()
    return [cell.outputs for cell in nb.cells]


def comparable(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs as saved, with what differs between two runs of the same code made equal:
    streams of one name merged, PNG bytes and object addresses, execution counts."""
    out: list[dict[str, Any]] = []
    for output in outputs:
        output = dict(output)
        output.pop("execution_count", None)
        stream = output["output_type"] == "stream"
        if (
            stream
            and out
            and out[-1]["output_type"] == "stream"
            and out[-1]["name"] == output["name"]
        ):
            out[-1]["text"] += output["text"]
            continue
        if "data" in output:
            data = dict(output["data"])
            if "image/png" in data:
                data["image/png"] = "<png>"
            if "text/plain" in data:
                data["text/plain"] = re.sub(r" at 0x[0-9a-f]+", " at 0x?", data["text/plain"])
            output["data"] = data
        out.append(output)
    return out


def is_monitor(output: dict[str, Any]) -> bool:
    data = output.get("data", {})
    return WIDGET_VIEW in data or data.get("text/plain", "").startswith("remotecell job-")


@pytest.fixture
def notebook_env(control_plane: Any, monkeypatch: Any) -> None:
    for key, value in control_plane.env().items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("monitor", ["off", "full"])
def test_a_notebook_saves_the_same_outputs_locally_and_remotely(
    notebook_env: None, tmp_path: Any, monitor: str
) -> None:
    local = run_notebook([SETUP, *CELLS], tmp_path)
    line = '%%remote monitor="off"\n' if monitor == "off" else "%%remote\n"
    remote = run_notebook([SETUP, *(line + cell for cell in CELLS)], tmp_path)

    assert comparable(local[0]) == comparable(remote[0])
    for code, here, there in zip(CELLS, local[1:], remote[1:], strict=True):
        if monitor == "full":
            # The monitor is the cell's first output, and only it is added.
            assert there and is_monitor(there[0]), (code, there)
            there = there[1:]
        assert comparable(there) == comparable(here), code
        assert not any(is_monitor(o) for o in there), code
    # What is compared is what a local run shows: the last plot, the Out before the figure.
    loop = local[3]
    assert [o["output_type"] for o in loop] == ["display_data"] and "image/png" in loop[0]["data"]
    assert [o["output_type"] for o in local[5]][-2:] == ["execute_result", "display_data"]
    assert [o.get("text") for o in local[1]] == ["a\n", None]


def test_the_out_is_formatted_on_the_runner_and_its_value_comes_back(kernel: Any) -> None:
    run = kernel.ok(
        "%%remote\n"
        "latex = get_ipython().display_formatter.formatters['text/latex']\n"
        "latex.for_type(complex, lambda z: f'${z.real:g} + {z.imag:g}i$')\n"
        "class Money:\n"
        "    def __init__(self, cents):\n"
        "        self.cents = cents\n"
        "    def _repr_html_(self):\n"
        "        return f'<b>{self.cents / 100:.2f} EUR</b>'\n"
        "price = Money(250)\n"
        "1 + 2j"
    )
    [result] = run.of_type("execute_result")
    assert result["data"]["text/latex"] == "$1 + 2i$"
    assert result["data"]["text/plain"] == "(1+2j)"
    assert kernel.value("_") == 1 + 2j and kernel.value("Out[2]") == 1 + 2j
    shown = kernel.ok("%%remote\nprice")
    assert shown.result["text/html"] == "<b>2.50 EUR</b>"


def test_the_monitor_mode_is_a_setting_and_a_cell_option(kernel: Any) -> None:
    def outputs(code: str) -> tuple[list[str], list[dict[str, Any]]]:
        run = kernel.ok(code)
        kinds = [m["msg_type"] for m in run.messages]
        return kinds, run.of_type("display_data")

    kinds, shown = outputs('%%remote monitor="compact"\nprint(1)')
    assert "comm_open" not in kinds
    [line] = shown
    assert set(line["data"]) == {"text/plain"} and line["data"]["text/plain"].startswith(
        "remotecell job-"
    )
    kernel.ok('%config RemoteMagics.monitor = "off"')
    kinds, shown = outputs("%%remote\nprint(1)")
    assert shown == [] and "comm_open" not in kinds
    kinds, shown = outputs('%%remote monitor="full"\nprint(1)')
    assert "comm_open" in kinds and len(shown) == 1
    bad = kernel.execute('%%remote monitor="loud"\nprint(1)')
    assert bad.error["ename"] == "ConfigError" and "monitor=" in bad.error["evalue"]


def test_a_cell_ending_in_a_plot_shows_its_out_before_the_figure_as_locally(kernel: Any) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2])"

    def order(run: Any) -> list[str]:
        return [
            m["msg_type"]
            for m in run.messages
            if m["msg_type"] == "execute_result"
            or (m["msg_type"] == "display_data" and "image/png" in m["content"]["data"])
        ]

    local = order(kernel.ok(code))
    remote = order(kernel.ok("%%remote\n" + code))
    assert local == ["execute_result", "display_data"]
    assert remote == local
