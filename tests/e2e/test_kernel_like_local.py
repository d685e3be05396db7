"""A remote cell behaves like the same cell run locally in the same kernel: names bound
before an error, star imports and IPython's magics, process state a warm runner must not
carry from one job to the next, error types, and widgets that cannot come back yet."""

from __future__ import annotations

import base64

import pytest

pytestmark = pytest.mark.kernel


def _same_cell_both_ways(kernel, cell: str, *, remote_line: str = "%%remote"):
    return kernel.execute(cell), kernel.execute(f"{remote_line}\n{cell}")


def test_names_bound_before_an_error_come_back(kernel):
    cell = "import fractions\nbefore = 41 + 1\nraise ValueError('half way')\nafter = 1"
    local = kernel.execute(cell)
    assert local.error["ename"] == "ValueError"
    assert kernel.value("before") == 42
    kernel.ok("del before, fractions")

    remote = kernel.execute(f"%%remote\n{cell}")
    assert (remote.error["ename"], remote.error["evalue"]) == ("ValueError", "half way")
    assert kernel.value("before") == 42
    assert kernel.value("str(fractions.Fraction(1, 2))") == "1/2"
    assert kernel.execute("after").error["ename"] == "NameError"
    # a notebook value the cell only read stays the notebook's own object
    kernel.ok("data = [1]")
    kernel.execute("%%remote\ndata.append(2)\nfresh = len(data)\n1 / 0")
    assert kernel.value("fresh") == 2
    assert kernel.value("data") == [1]


def test_star_imports_bring_their_names_back(kernel):
    local, remote = _same_cell_both_ways(kernel, "from math import *")
    assert local.reply["status"] == remote.reply["status"] == "ok", remote.error
    assert remote.stderr == ""
    kernel.ok("del floor")
    kernel.ok("%%remote\nfrom math import *\nfrom pylab import *")
    assert kernel.value("int(floor(2.5))") == 2
    assert kernel.value("float(linspace(0, 1, 3)[1])") == 0.5
    # an explicit pull= still means just those names
    kernel.ok("%%remote pull=['tau']\nfrom cmath import *\ntau = 6.28")
    assert kernel.value("tau") == 6.28
    assert kernel.execute("phase").error["ename"] == "NameError"


def test_names_that_pylab_hides_in_the_notebook_travel(kernel):
    kernel.ok("%pylab inline")
    cell = "total = float(np.sqrt(16)) + float(sqrt(9))"
    kernel.ok(cell)
    assert kernel.value("total") == 7.0
    kernel.ok("del total")
    kernel.ok(f"%%remote\n{cell}")
    assert kernel.value("total") == 7.0


def _png(run) -> bytes:
    pngs = [c["data"]["image/png"] for c in run.of_type("display_data") if "image/png" in c["data"]]
    assert len(pngs) == 1, run.messages
    return base64.b64decode(pngs[0])


def test_matplotlib_inline_magic_works_remotely(kernel):
    cell = "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
    local, remote = _same_cell_both_ways(kernel, cell)
    assert remote.reply["status"] == "ok", remote.error
    assert _png(local)[:4] == _png(remote)[:4] == b"\x89PNG"


def test_logging_configured_by_a_cell_shows_in_the_cell(kernel, make_kernel, control_plane):
    cell = (
        "import logging\nlogging.basicConfig(level=logging.INFO)\n"
        "logging.getLogger('nb').info('hello from logging')"
    )
    local = kernel.ok(cell)
    assert local.stderr == "INFO:nb:hello from logging\n"
    remote = kernel.ok(f"%%remote\n{cell}")
    assert remote.stderr == "INFO:nb:hello from logging\n"
    # The notebook's logging configuration travels with its later cells, as in one kernel,
    # and prints in the cell that logs (format, level, logger levels).
    kernel.ok("%%remote\nlogging.getLogger('nb.quiet').setLevel(logging.ERROR)")
    later = kernel.ok(
        "%%remote\nimport logging\nlogging.getLogger('nb').info('still configured')\n"
        "logging.getLogger('nb.quiet').warning('unseen')"
    )
    assert later.stderr == "INFO:nb:still configured\n"
    # Another notebook's job on the same warm runner starts as a fresh kernel would.
    other = make_kernel(control_plane.env())
    other.ok("%load_ext remotecell")
    fresh = other.ok("%%remote\nimport logging\nlogging.getLogger('nb').info('unseen')")
    assert fresh.stderr == ""
    # A session is one kernel across cells: its configuration stays, and prints in the
    # cell that logs.
    kernel.ok(f'%%remote session="logs" pull=[]\n{cell}')
    later = kernel.ok('%%remote session="logs" pull=[]\nlogging.getLogger("nb").info("again")')
    assert later.stderr == "INFO:nb:again\n"


def test_a_library_warning_shows_in_every_job_as_in_a_fresh_kernel(kernel, tmp_path):
    (tmp_path / "noisy_lib.py").write_text(
        "import warnings\ndef f():\n    warnings.warn('noisy library', UserWarning)\n"
    )
    # the module is imported by name in each cell, so that no notebook name refers to it
    cell = (
        f"import importlib, sys\nsys.path.insert(0, {str(tmp_path)!r})\n"
        "importlib.import_module('noisy_lib').f()"
    )
    local = kernel.ok(cell)
    assert "UserWarning: noisy library" in local.stderr
    for _ in range(2):
        remote = kernel.ok(f"%%remote\n{cell}")
        assert "UserWarning: noisy library" in remote.stderr
    # within a session, as within one kernel, it shows once
    kernel.ok(f'%%remote session="w" pull=[]\n{cell}')
    again = kernel.ok('%%remote session="w" pull=[]\nimportlib.import_module("noisy_lib").f()')
    assert "noisy library" not in again.stderr


def test_a_traceback_from_a_post_execute_callback_is_shown(kernel):
    cell = (
        "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2])\nplt.title(r'$\\frac{$')\nvalue = 5"
    )
    local, remote = _same_cell_both_ways(kernel, cell)
    assert local.reply["status"] == remote.reply["status"] == "ok"
    assert "ValueError" in "\n".join(local.error["traceback"])
    assert "ValueError" in remote.stderr and "Expected" in remote.stderr
    assert kernel.value("value") == 5


def test_a_syntax_error_is_a_syntax_error(kernel):
    kernel.ok(
        "try:\n    get_ipython().run_cell_magic('remote', '', 'x = (')\n"
        "except SyntaxError as err:\n    caught = (err.lineno, err.msg)"
    )
    assert kernel.value("caught") == (2, "'(' was never closed")
    run = kernel.execute("%%remote\nx = 1\ny = (")
    text = "\n".join(run.error["traceback"])
    assert 'File "<cell>", line 3' in text and "SyntaxError: '(' was never closed" in text
    assert "_magics.py" not in text and "Traceback" not in text


def test_widgets_come_back_from_a_remote_cell_without_a_crash(kernel):
    run = kernel.ok(
        "%%remote\nimport ipywidgets as widgets\nslider = widgets.IntSlider(value=3)\n"
        "button = widgets.Button()\nbutton.on_click(lambda _: None)\nn = 7\nslider"
    )
    assert "not brought back" not in run.stderr, run.stderr
    assert "AttributeError" not in run.stderr and "Traceback" not in run.stderr
    assert kernel.value("n") == 7
    assert kernel.value("slider.value, type(button).__name__") == (3, "Button")
    # the job monitor's last word is that the job ended
    final = run.of_type("update_display_data")[-1]["data"]["text/plain"]
    assert "succeeded" in final, final


def test_pylab_in_a_remote_cell_brings_its_names_back(kernel):
    kernel.ok("%%remote\n%pylab inline")
    assert kernel.value("float(linspace(0, 1, 5)[1])") == 0.25
    assert kernel.value("int(np.sqrt(16)), plt.__name__") == (4, "matplotlib.pyplot")


def test_a_closed_file_is_left_out_without_a_word(kernel, tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("name,count\napples,3\n")
    run = kernel.ok(f"%%remote\nwith open({str(path)!r}) as f:\n    text = f.read()")
    assert run.stderr == ""
    assert kernel.value("text") == "name,count\napples,3\n"
    # a file still open is of use, and cannot come back: that is said
    run = kernel.ok(f"%%remote\nopened = open({str(path)!r})\nn = 1")
    assert "not brought back: `opened` (_io.TextIOWrapper)" in run.stderr
    assert kernel.value("n") == 1


def test_pylab_names_from_a_remote_cell_are_hidden_as_locally(kernel):
    kernel.ok("%%remote\n%pylab inline\nx = 3")
    assert kernel.value("x") == 3  # what the cell bound after %pylab comes back
    # hidden from %who, as a local %pylab hides them, and the kernel's own NumPy
    hidden = (
        "sorted(n for n in ('np', 'plt', 'linspace', 'x') if n in get_ipython().user_ns_hidden)"
    )
    assert kernel.value(hidden) == ["linspace", "np", "plt"]
    assert kernel.value("np is __import__('numpy')")


def test_a_warning_filter_set_in_one_cell_holds_in_the_next(kernel):
    kernel.ok("%%remote\nimport warnings\nwarnings.filterwarnings('ignore', message='hush')")
    run = kernel.ok("%%remote\nimport warnings\nwarnings.warn('hush now')\nwarnings.warn('loud')")
    assert "hush" not in run.stderr and "UserWarning: loud" in run.stderr


def test_the_notebooks_inline_backend_config_reaches_the_runner(kernel, make_kernel, control_plane):
    plot = "%%remote\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"

    def formats(run) -> set[str]:
        return {mime for c in run.of_type("display_data") for mime in c["data"] if "image" in mime}

    kernel.ok("%config InlineBackend.figure_formats = ['svg']")
    assert formats(kernel.ok(plot)) == {"image/svg+xml"}
    # another notebook on the same warm runner keeps the default
    other = make_kernel(control_plane.env())
    other.ok("%load_ext remotecell")
    assert formats(other.ok(plot)) == {"image/png"}
