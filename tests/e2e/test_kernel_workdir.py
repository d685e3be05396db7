"""Relative paths in a remote cell resolve as they do in the notebook: a runner of the
local executor works in the kernel's cwd for the cell, and a warm runner serves kernels
in other directories, each seeing its own files. (The docker executor's snapshot of the
directory: ``test_kernel_workdir_docker.py``.)"""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel


def png(width: int = 2, height: int = 1) -> bytes:
    """A valid grey PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def notebook_dir(root: Path, name: str, image: bytes) -> Path:
    d = root / name
    (d / "images").mkdir(parents=True)
    (d / "data.csv").write_text(f"x,y\n{name},1\n")
    (d / "images" / "x.png").write_bytes(image)
    return d


READ_BOTH = (
    "%%remote pull=[]\n"
    "import os\n"
    "from IPython.display import Image, display\n"
    'display(Image(filename="images/x.png"))\n'
    'open("data.csv").read(), os.getpid()'
)


def test_relative_paths_resolve_in_each_notebooks_directory_on_one_warm_runner(
    make_kernel, control_plane, tmp_path
):
    first = notebook_dir(tmp_path, "first", png(2, 1))
    second = notebook_dir(tmp_path, "second", png(1, 3))
    kernels = []
    for d in (first, second):
        k = make_kernel(control_plane.env())
        k.ok("%load_ext remotecell")
        k.ok(f"import os; os.chdir({str(d)!r})")
        kernels.append(k)

    pids = []
    for k, d in [(kernels[0], first), (kernels[1], second), (kernels[0], first)]:
        run = k.ok(READ_BOTH, timeout=120)
        [bundle] = [c["data"] for c in run.of_type("display_data") if "image/png" in c["data"]]
        assert base64.b64decode(bundle["image/png"]) == (d / "images" / "x.png").read_bytes()
        text, pid = eval(run.result["text/plain"])
        assert text == f"x,y\n{d.name},1\n"
        pids.append(pid)
        assert "not copied" not in run.stderr  # the runner sees the files in place
    assert len(set(pids)) == 1, "the cells should have shared one warm runner"

    # a session's runner follows the kernel into another directory between cells
    k = kernels[0]
    code = '%%remote session="s" pull=[]\nopen("data.csv").read()'
    assert k.ok(code, timeout=120).result == {"text/plain": repr("x,y\nfirst,1\n")}
    k.ok(f"os.chdir({str(second)!r})")
    assert k.ok(code, timeout=120).result == {"text/plain": repr("x,y\nsecond,1\n")}
