"""The embedded default: nothing configured, `%load_ext remotecell` finds or starts a
control plane for this user, shared by kernels and surviving kernel restarts."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import kill_runners, short_tmpdir

from remotecell.client._embedded import stop

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir():
    directory = short_tmpdir("rce-")
    yield directory
    stop(directory)
    kill_runners(str(directory))
    shutil.rmtree(directory, ignore_errors=True)


def embedded_env(data_dir: Path) -> dict[str, str]:
    return {"REMOTECELL_DATA_DIR": str(data_dir), "REMOTECELL_URL": "", "REMOTECELL_TOKEN": ""}


def test_load_ext_starts_one_control_plane_shared_by_kernels_and_restarts(make_kernel, data_dir):
    assert not (data_dir / "server.json").exists()
    first = make_kernel(embedded_env(data_dir))
    first.ok("%load_ext remotecell")
    first.ok("x = 21")
    assert first.ok("%%remote\nx * 2").result == {"text/plain": "42"}

    info = json.loads((data_dir / "server.json").read_text())
    assert info["url"] == f"unix:{data_dir / 'run' / 'cp.sock'}"
    token = data_dir / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert info["token_file"] == str(token)
    # the control plane is not the kernel's child process group: it outlives the kernel
    assert os.getpgid(info["pid"]) != os.getpgid(first.km.provisioner.pid)

    second = make_kernel(embedded_env(data_dir))
    second.ok("%load_ext remotecell")
    assert second.ok("%%remote\n'from the second kernel'").result == {
        "text/plain": "'from the second kernel'"
    }
    first.restart()
    first.ok("%load_ext remotecell")
    assert first.ok("%%remote\n1 + 1").result == {"text/plain": "2"}
    assert json.loads((data_dir / "server.json").read_text())["pid"] == info["pid"]  # the same one
    jobs = first.ok("%remote_jobs").displayed
    assert "from the second kernel" in jobs


def test_remotecell_run_executes_the_quickstart_on_the_embedded_default(data_dir):
    env = {**os.environ, **embedded_env(data_dir)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "remotecell",
            "run",
            str(ROOT / "examples/notebooks/quickstart.ipynb"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ran in " in out and "\n43\n" in out
    assert "y = 42" in out
    assert "[0, 1, 4, 9, 16]" in out
    assert "succeeded" in out


def write_notebook(path: Path, *sources: str, markdown_at: int | None = None) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    if markdown_at is not None:
        nb.cells.insert(markdown_at, nbformat.v4.new_markdown_cell("# notes"))
    nbformat.write(nb, path)
    return path


def remotecell_run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remotecell", "run", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_remotecell_run_fails_loudly_on_a_failing_notebook(data_dir, tmp_path):
    path = write_notebook(
        tmp_path / "broken.ipynb",
        "%load_ext remotecell",
        "%%remote\n1/0",
        "print('after the failure')",
        "print('and this')",
        markdown_at=3,
    )
    done = remotecell_run(str(path), env=embedded_env(data_dir))
    assert done.returncode == 1
    assert "ZeroDivisionError" in done.stdout
    assert "after the failure" not in done.stdout
    assert done.stderr.splitlines()[-2:] == [
        "cell [1] failed: %%remote",
        "2 code cells after it were not run (--allow-errors runs every cell)",
    ]


def test_remotecell_run_allow_errors_runs_every_cell_and_writes_the_output(tmp_path):
    path = write_notebook(
        tmp_path / "broken.ipynb",
        "print('before')",
        "x = 1\n1/0",
        "print('after the failure')",
        "raise KeyError('again')",
        "print('last')",
    )
    out = tmp_path / "executed.ipynb"
    done = remotecell_run("--allow-errors", "--output", str(out), str(path), env={})
    # like `jupyter nbconvert --allow-errors`: the run succeeds, the failures are still named
    assert done.returncode == 0, done.stdout + done.stderr
    assert "after the failure" in done.stdout and "last" in done.stdout
    assert done.stderr.splitlines()[-1] == "2 cells failed: [1] x = 1; [3] raise KeyError('again')"

    import nbformat

    executed = nbformat.read(out, as_version=4)
    assert executed.cells[1].outputs[0]["ename"] == "ZeroDivisionError"
    assert executed.cells[4].outputs[0]["text"] == "last\n"
    assert executed.cells[4].execution_count == 5


def test_remotecell_run_writes_the_output_of_a_run_that_stopped(tmp_path):
    path = write_notebook(tmp_path / "broken.ipynb", "print('before')", "1/0", "print('never')")
    out = tmp_path / "executed.ipynb"
    done = remotecell_run("--output", str(out), str(path), env={})
    assert done.returncode == 1

    import nbformat

    executed = nbformat.read(out, as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "before\n"
    assert executed.cells[1].outputs[0]["ename"] == "ZeroDivisionError"
    assert executed.cells[2].outputs == []


def test_remotecell_run_starts_its_kernel_over_ipc_without_a_tcp_warning(tmp_path):
    path = write_notebook(
        tmp_path / "where.ipynb",
        "from ipykernel.kernelapp import IPKernelApp\nIPKernelApp.instance().transport",
    )
    done = remotecell_run(str(path), env={})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'ipc'" in done.stdout
    assert "without encryption" not in done.stderr


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            "import time\ntime.sleep(60)",
            "cell [1] did not finish within 2 s (--timeout sets the seconds a cell may run): "
            "import time",
        ),
        ("import os\nos._exit(3)", "cell [1] killed the kernel: import os"),
    ],
    ids=["timeout", "dead-kernel"],
)
def test_remotecell_run_names_the_cell_that_timed_out_or_killed_its_kernel(tmp_path, source, says):
    path = write_notebook(tmp_path / "stops.ipynb", "print('before')", source, "print('never')")
    out = tmp_path / "executed.ipynb"
    done = remotecell_run("--timeout", "2", "--output", str(out), str(path), env={})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-2:][0] == says
    assert done.stderr.splitlines()[-1].startswith("1 code cell after it was not run")
    assert "before" in done.stdout and "never" not in done.stdout
    assert out.exists()


def test_remotecell_run_with_an_unknown_kernel_says_which_exist(tmp_path):
    path = write_notebook(tmp_path / "k.ipynb", "1")
    done = remotecell_run("--kernel", "nope", str(path), env={})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: no Jupyter kernel named 'nope'; installed: ")
    assert "python3" in line


def test_a_wrong_remotecell_url_is_one_clear_sentence(make_kernel, data_dir):
    kernel = make_kernel(
        {"REMOTECELL_URL": f"unix:{data_dir}/nothing.sock", "REMOTECELL_TOKEN": "t"}
    )
    kernel.ok("%load_ext remotecell")
    run = kernel.execute("%%remote\n1")
    assert run.error["ename"] == "ConnectionError"
    assert "no remotecell control plane answers at unix:" in run.error["evalue"]
    assert "remotecell serve" in run.error["evalue"]
    kernel = make_kernel(
        {"REMOTECELL_URL": f"unix:{data_dir}/nothing.sock", "REMOTECELL_TOKEN": ""}
    )
    kernel.ok("%load_ext remotecell")
    run = kernel.execute("%%remote\n1")
    assert run.error["ename"] == "ConfigError"
    assert "REMOTECELL_TOKEN" in run.error["evalue"]
