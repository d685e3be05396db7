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
    # saved as a local run saves it: the remote type and message
    assert (error["ename"], error["evalue"]) == ("ZeroDivisionError", "division by zero")
    text = "\n".join(error["traceback"])
    assert "ZeroDivisionError" in text
    # line 3 of the notebook cell (the %%remote line is line 1)
    assert "line 3" in text
    assert "_execution.py" not in text  # no local remotecell frames
    assert "RemoteError" not in text  # the remote traceback alone, as a local run shows it
    assert kernel.value(
        "isinstance(_remote_err := __import__('sys').last_value, __import__('remotecell').RemoteError)"
        " and isinstance(_remote_err, ZeroDivisionError)"
    )
    assert kernel.value("__import__('sys').last_value.type_name") == "ZeroDivisionError"
    # caught as the remote type, as locally
    kernel.ok(
        "try:\n    get_ipython().run_cell_magic('remote', '', '{}[1]')\n"
        "except KeyError as err:\n    caught = (type(err).__name__, str(err))"
    )
    assert kernel.value("caught") == ("KeyError", "1")


def test_shell_commands_and_magics_run_remotely(kernel):
    run = kernel.ok(
        "%%remote\n!echo from-the-shell\nlisted = !echo captured\n%time total = sum(range(10))"
    )
    assert run.stdout.startswith("from-the-shell\n")
    assert "Wall time" in run.stdout
    assert kernel.value("list(listed)") == ["captured"]
    assert kernel.value("total") == 45
    # a cell magic as the cell's first line
    run = kernel.ok("%%remote\n%%time\nsquares = [i * i for i in range(4)]")
    assert "Wall time" in run.stdout
    assert kernel.value("squares") == [0, 1, 4, 9]


def test_a_trailing_semicolon_suppresses_the_value_and_stdout_keeps_its_order(kernel):
    run = kernel.ok("%%remote\nprint('one')\nprint('two', 'three')\n1 + 1;")
    assert run.result is None
    assert run.stdout == "one\ntwo three\n"


def test_the_magics_follow_traitlets_config(make_kernel, control_plane):
    # No REMOTECELL_URL: the control plane comes from IPython config, as from ipython_config.py
    k = make_kernel({"REMOTECELL_URL": "", "REMOTECELL_DATA_DIR": "/nonexistent/never-used"})
    k.ok(
        f"get_ipython().config.RemoteMagics.url = {control_plane.endpoint.url!r}\n"
        f"get_ipython().config.RemoteMagics.token = {control_plane.endpoint.token!r}"
    )
    k.ok("%load_ext remotecell")
    assert k.ok("%%remote\n'configured'").result == {"text/plain": "'configured'"}


def test_unload_removes_the_magics_and_reload_works(kernel):
    kernel.ok("%unload_ext remotecell")
    run = kernel.execute("%%remote\n1")
    assert run.reply["status"] == "error" and run.reply["ename"] == "UsageError"
    assert "Cell magic `%%remote` not found" in run.stderr
    kernel.ok("%load_ext remotecell")
    assert kernel.ok("%%remote\n2 + 2").result == {"text/plain": "4"}


def test_output_written_to_the_file_descriptors_reaches_the_cell(kernel):
    run = kernel.ok(
        "%%remote pull=[]\nimport os, subprocess, ctypes\n"
        "print('from python')\n"
        "os.system('echo from os.system')\n"
        "subprocess.run(['sh', '-c', 'echo to stderr >&2'])\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.printf(b'from printf\\n'); libc.fflush(None)"
    )
    assert run.stdout == "from python\nfrom os.system\nfrom printf\n"
    assert run.stderr == "to stderr\n"
    # between cells, such output goes to the runner's log, not to the next cell
    assert kernel.ok("%%remote\nprint('next')").stdout == "next\n"
