"""Images through a real kernel and control plane: the venv builder (the embedded default)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel


def test_a_cell_runs_in_an_image_with_a_package_the_kernel_lacks(kernel):
    assert kernel.execute("import tabulate").error["ename"] == "ModuleNotFoundError"
    kernel.ok(
        "import remotecell\n"
        "img = remotecell.Image.debian_slim().pip_install('tabulate==0.9.0').env({'GREETING': 'hi'})"
    )
    run = kernel.ok(
        "%%remote image=img pull=[]\n"
        "import os, sys, tabulate\n"
        "print(os.environ['GREETING'], sys.prefix != sys.base_prefix)\n"
        "tabulate.__version__"
    )
    assert run.result == {"text/plain": "'0.9.0'"}
    assert run.stdout == "hi True\n"
    assert "pip install tabulate==0.9.0" in run.stderr  # the build log's progress lines
    # the second time the image is in the cache: no build log
    run = kernel.ok("%%remote image=img pull=[]\nimport tabulate\ntabulate.__version__")
    assert run.result == {"text/plain": "'0.9.0'"}
    assert "pip install" not in run.stderr


def test_remote_image_cell_defines_an_image(kernel):
    kernel.ok(
        "%%remote_image small\n# a comment\npip tabulate==0.9.0\nenv MODE=test\nworkdir app\n"
        "run echo built > marker.txt"
    )
    assert kernel.value("type(small).__name__") == "Image"
    run = kernel.ok(
        "%%remote image=small pull=[]\nimport os\n(os.environ['MODE'], open('marker.txt').read().strip())"
    )
    assert run.result == {"text/plain": "('test', 'built')"}
    bad = kernel.execute("%%remote_image broken\npip tabulate\npipp requests")
    assert bad.error["ename"] == "ConfigError"
    assert bad.error["evalue"].startswith("line 2: unknown step 'pipp'")


def test_a_package_pip_cannot_find_is_an_image_build_error_naming_the_step(kernel):
    kernel.ok(
        "import remotecell\nbad = remotecell.Image.debian_slim().pip_install('remotecell-no-such-package-xyz==1.0')"
    )
    run = kernel.execute("%%remote image=bad\n1", timeout=120)
    assert run.error["ename"] == "ImageBuildError"
    assert "step 1 of 1, pip install remotecell-no-such-package-xyz==1.0" in run.error["evalue"]
    assert "apt" not in run.error["evalue"]
    run = kernel.execute(
        "import remotecell\napt_img = remotecell.Image.debian_slim().apt_install('ffmpeg')\n"
    )
    run = kernel.execute("%%remote image=apt_img\n1")
    assert run.error["ename"] == "ImageBuildError"
    assert "docker builder" in run.error["evalue"]
