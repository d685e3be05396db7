"""The core loop through a real Jupyter kernel: the issue's own example, end to end."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel


def test_cell_runs_remotely_with_closure_output_and_results(kernel):
    kernel.ok("x = 21\ndef double(v): return 2 * v")
    run = kernel.ok('%%remote\nimport os\ny = double(x)\nprint("ran in", os.getpid())\ny + 1')
    kernel_pid = kernel.value("__import__('os').getpid()")
    assert run.stdout.startswith("ran in ")
    remote_pid = int(run.stdout.split()[-1])
    assert remote_pid != kernel_pid
    assert run.result == {"text/plain": "43"}
    assert kernel.value("y") == 42
    # `os` was imported by the cell: it comes back as a module, by name
    assert kernel.value("os.__name__") == "os"


def test_remote_display_and_matplotlib_figure(kernel):
    run = kernel.ok(
        '%%remote\nfrom IPython.display import HTML, display\ndisplay(HTML("<b>hi</b>"))'
    )
    bundles = [c["data"] for c in run.of_type("display_data")]
    assert {"text/html": "<b>hi</b>", "text/plain": "<IPython.core.display.HTML object>"} in bundles

    run = kernel.ok(
        "%%remote\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\n_ = plt.title('squares')"
    )
    pngs = [c["data"]["image/png"] for c in run.of_type("display_data") if "image/png" in c["data"]]
    assert len(pngs) == 1
    import base64

    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")


def test_remote_exception_is_a_remote_error_with_the_remote_traceback(kernel):
    run = kernel.execute("%%remote\na = 1\n1/0")
    assert run.reply["status"] == "error"
    error = run.error
    assert error["ename"] == "RemoteError"
    assert "ZeroDivisionError" in error["evalue"]
    text = "\n".join(error["traceback"])
    assert "ZeroDivisionError" in text
    # line 3 of the notebook cell (the %%remote line is line 1)
    assert "line 3" in text
    assert "_execution.py" not in text  # no local remotecell frames
    assert (
        kernel.value("type(_remote_err := __import__('sys').last_value).__name__") == "RemoteError"
    )
    assert kernel.value("__import__('sys').last_value.type_name") == "ZeroDivisionError"
