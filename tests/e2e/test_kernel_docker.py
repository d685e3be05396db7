"""The docker executor end to end: `remotecell serve --executor docker`, a real kernel,
images built by the docker builder, runners in containers (host network, loopback only)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel


def test_cells_run_in_containers_with_and_without_an_image(make_kernel, docker_control_plane):
    kernel = make_kernel(docker_control_plane.env())
    kernel.ok("%load_ext remotecell")
    # no image: the default debian_slim image, built once by the docker builder
    run = kernel.ok("%%remote pull=[]\nimport os\nos.path.exists('/.dockerenv')", timeout=600)
    assert run.result == {"text/plain": "True"}

    assert kernel.execute("import termcolor").error["ename"] == "ModuleNotFoundError"
    kernel.ok(
        "import remotecell\n"
        "img = remotecell.Image.debian_slim().pip_install('termcolor==2.4.0').env({'WHERE': 'container'})"
    )
    run = kernel.ok(
        "%%remote image=img\nimport os, importlib.metadata, termcolor\nwhere = os.environ['WHERE']\n"
        "importlib.metadata.version('termcolor')",
        timeout=600,
    )
    assert run.result == {"text/plain": "'2.4.0'"}
    assert "[1/2] pip install termcolor==2.4.0" in run.stderr
    assert kernel.value("where") == "container"
    # a second cell: the image is cached and a runner is warm
    run = kernel.ok("%%remote image=img pull=[]\nimport termcolor\ntermcolor.__name__")
    assert run.result == {"text/plain": "'termcolor'"}
    assert "pip install" not in run.stderr


def test_cpu_and_memory_limits_apply_to_the_runner_container(make_kernel, docker_control_plane):
    kernel = make_kernel(docker_control_plane.env())
    kernel.ok("%load_ext remotecell")
    code = (
        "%%remote cpu=0.5 memory=256 pull=[]\n"
        "import os\n"
        "v1 = '/sys/fs/cgroup/memory/memory.limit_in_bytes'\n"
        "path = v1 if os.path.exists(v1) else '/sys/fs/cgroup/memory.max'\n"
        "int(open(path).read())"
    )
    run = kernel.ok(code, timeout=600)
    assert run.result == {"text/plain": str(256 * 1024 * 1024)}


def test_a_cell_past_its_memory_limit_fails_saying_so(make_kernel, docker_control_plane):
    kernel = make_kernel(docker_control_plane.env())
    kernel.ok("%load_ext remotecell")
    run = kernel.execute(
        "%%remote memory=200 pull=[]\nblocks = []\nfor _ in range(40):\n"
        "    blocks.append(bytearray(16 << 20))",
        timeout=600,
    )
    assert run.error is not None and run.error["ename"] == "RemoteError"
    assert "ran out of memory: the cell used all of its memory=200 MiB" in run.error["evalue"]
