"""Runners in containers do not see the notebook's files: the kernel offers its directory
as a snapshot of small files, which the runner writes out for each job; what is left out
(by ``.remotecellignore``, or with the snapshot off) is said in one line."""

from __future__ import annotations

import base64

import pytest
from test_kernel_workdir import png

pytestmark = pytest.mark.kernel


def test_a_container_gets_a_snapshot_of_the_notebooks_directory(
    make_kernel, docker_control_plane, tmp_path
):
    nb = tmp_path / "project"
    (nb / "images").mkdir(parents=True)
    (nb / "data.csv").write_text("x,y\n1,2\n")
    (nb / "images" / "x.png").write_bytes(png(3, 2))
    (nb / "checkpoints").mkdir()
    (nb / "checkpoints" / "model.pt").write_bytes(b"weights")
    (nb / ".remotecellignore").write_text("checkpoints/\n")
    kernel = make_kernel(docker_control_plane.env())
    kernel.ok("%load_ext remotecell")
    kernel.ok(f"import os; os.chdir({str(nb)!r})")

    run = kernel.ok(
        "%%remote pull=[]\n"
        "import os\n"
        "from IPython.display import Image, display\n"
        'display(Image(filename="images/x.png"))\n'
        'open("data.csv").read(), os.path.exists("checkpoints"), os.getcwd(), '
        "os.path.exists('/.dockerenv')",
        timeout=600,
    )
    [bundle] = [c["data"] for c in run.of_type("display_data") if "image/png" in c["data"]]
    assert base64.b64decode(bundle["image/png"]) == png(3, 2)
    text, has_checkpoints, cwd, in_container = eval(run.result["text/plain"])
    assert (text, has_checkpoints, in_container) == ("x,y\n1,2\n", False, True)
    assert cwd != str(nb)  # the job's own copy
    assert "not copied" not in run.stderr  # nothing was left out

    (nb / "data.csv").write_text("changed\n")
    run = kernel.ok('%%remote pull=[]\nopen("data.csv").read()', timeout=120)
    assert run.result == {"text/plain": repr("changed\n")}

    kernel.ok("%config RemoteMagics.cwd_snapshot = False")
    run = kernel.execute('%%remote pull=[]\nopen("data.csv").read()', timeout=120)
    assert run.stderr.splitlines()[0] == (
        "remotecell: the notebook's directory is not copied to the runner "
        "(RemoteMagics.cwd_snapshot is off): relative paths resolve in the runner's own directory"
    )
    assert run.error is not None and "data.csv" in run.error["evalue"]
