"""What travels with a ``%%remote`` cell and what comes back: the real magic in an
in-process IPython shell, against a real control plane and its runners.

The shell is IPython's test singleton (``start_ipython``), shared by every test here: each test binds its
own ``mc_``-prefixed names and removes what it added.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from IPython.core.interactiveshell import ExecutionResult

import remotecell
from remotecell.client import Client
from remotecell.contract import values
from remotecell.kernel_magics import load_ipython_extension, unload_ipython_extension


@pytest.fixture
def ip(shell: Any, control_plane: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in control_plane.env().items():
        monkeypatch.setenv(key, value)
    before = set(shell.user_ns)
    # a new magics object: its client connects to this test's control plane
    load_ipython_extension(shell)
    yield shell
    unload_ipython_extension(shell)
    for name in set(shell.user_ns) - before:
        del shell.user_ns[name]


def run(ip: Any, cell: str) -> ExecutionResult:
    result = ip.run_cell(cell)
    assert result.error_before_exec is None, result.error_before_exec
    return result


def ok(ip: Any, cell: str) -> Any:
    result = run(ip, cell)
    assert result.error_in_exec is None, result.error_in_exec
    return result.result


def test_nested_functions_and_closures(ip: Any) -> None:
    ok(
        ip,
        "def mc_make_adder(n):\n"
        "    def add(v):\n"
        "        return v + n + mc_offset\n"
        "    return add\n"
        "mc_add5 = mc_make_adder(5)\n"
        "mc_offset = 100\n",
    )
    ok(
        ip,
        "%%remote\n"
        "mc_r1 = mc_add5(1)\n"
        "mc_r2 = mc_make_adder(2)(3)\n"
        "def mc_scaled(v):\n"
        "    return v * mc_offset\n",
    )
    assert ip.user_ns["mc_r1"] == 106
    assert ip.user_ns["mc_r2"] == 105
    # a function defined remotely sees the notebook's globals once it is back
    assert ip.user_ns["mc_scaled"].__globals__ is ip.user_ns
    ip.user_ns["mc_offset"] = 3
    assert ip.user_ns["mc_scaled"](2) == 6


def test_a_shipped_function_sees_what_the_cell_rebinds(ip: Any) -> None:
    ok(ip, "mc_setting = 'notebook'\ndef mc_get():\n    return mc_setting\n")
    ok(ip, "%%remote\nmc_setting = 'runner'\nmc_got = mc_get()\n")
    assert ip.user_ns["mc_got"] == "runner"  # as the cell would have run in the notebook


def test_a_notebook_function_using_get_ipython(ip: Any) -> None:
    # the runner has its own get_ipython: the notebook's shell is not sent
    ok(ip, "def mc_shell_out(word):\n    return get_ipython().getoutput(f'echo {word}')\n")
    ok(ip, "%%remote\nmc_lines = list(mc_shell_out('from-the-runner'))\n")
    assert ip.user_ns["mc_lines"] == ["from-the-runner"]


def test_notebook_class_and_instance(ip: Any) -> None:
    ok(
        ip,
        "class McPoint:\n"
        "    def __init__(self, x, y):\n"
        "        self.x, self.y = x, y\n"
        "    def norm2(self):\n"
        "        return self.x ** 2 + self.y ** 2\n"
        "    def moved(self, dx):\n"
        "        return McPoint(self.x + dx, self.y)\n"
        "mc_p = McPoint(3, 4)\n",
    )
    value = ok(
        ip,
        "%%remote\n"
        "mc_norm = mc_p.norm2()\n"
        "mc_q = mc_p.moved(1)\n"
        "mc_is = isinstance(mc_p, McPoint) and type(mc_q) is McPoint\n"
        "mc_q.x\n",
    )
    assert value == 4
    assert ip.user_ns["mc_norm"] == 25
    assert ip.user_ns["mc_is"] is True
    # an instance made remotely comes back as an instance of the notebook's class
    assert type(ip.user_ns["mc_q"]) is ip.user_ns["McPoint"]
    assert ip.user_ns["mc_q"].norm2() == 32


def test_lambdas(ip: Any) -> None:
    ok(ip, "mc_sq = lambda v: v * v\n")
    ok(ip, "%%remote\nmc_vals = list(map(mc_sq, range(4)))\nmc_inc = lambda v: v + 1\n")
    assert ip.user_ns["mc_vals"] == [0, 1, 4, 9]
    assert ip.user_ns["mc_inc"](1) == 2


def test_module_alias_from_the_notebook(ip: Any) -> None:
    ok(ip, "import numpy as mc_np\n")
    value = ok(ip, "%%remote\nmc_total = int(mc_np.arange(5).sum())\nmc_np.__name__\n")
    assert value == "numpy"
    assert ip.user_ns["mc_total"] == 10
    assert ip.user_ns["mc_np"] is np


def test_a_name_read_and_assigned_travels_and_comes_back(ip: Any) -> None:
    ok(ip, "mc_x = 40\n")
    ok(ip, "%%remote\nmc_x = mc_x + 1\n")
    assert ip.user_ns["mc_x"] == 41
    ok(ip, "%%remote\nmc_x += 1\n")
    assert ip.user_ns["mc_x"] == 42


def test_magic_code_in_the_cell_gets_its_names(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ok(ip, "mc_n = 10\nmc_word = 'hello-from-the-notebook'\n")
    ok(ip, "%%remote\n%time mc_sum = sum(range(mc_n))\n!echo {mc_word}\n")
    assert ip.user_ns["mc_sum"] == 45
    assert "hello-from-the-notebook" in capsys.readouterr().out


def test_large_array_travels_as_a_blob_and_comes_back_modified(ip: Any, control_plane: Any) -> None:
    original = np.arange(200_000, dtype=np.float64)  # 1.6 MB
    ip.user_ns["mc_arr"] = original
    ok(ip, "%%remote\nmc_arr[0] = -1.0\nmc_arr *= 2\nmc_mean = float(mc_arr[1:].mean())\n")
    back = ip.user_ns["mc_arr"]
    assert back is not original
    assert back[0] == -2.0
    np.testing.assert_array_equal(back[1:], 2 * np.arange(1, 200_000, dtype=np.float64))
    assert ip.user_ns["mc_mean"] == 200_000.0
    assert original[0] == 0.0  # the notebook's own array was not touched
    stored = {p.name for p in control_plane.data_dir.rglob("*") if p.is_file()}
    assert values.content_hash(original.tobytes()) in stored


def test_unserialisable_variable_stops_the_submission(ip: Any, client: Client) -> None:
    ok(ip, "%%remote\nmc_warm = 1\n")  # the count below must not depend on connecting
    jobs = len(client.list_jobs())
    ok(ip, "import threading\nmc_lock = threading.Lock()\n")
    result = run(ip, "%%remote\nwith mc_lock:\n    mc_locked = True\n")
    err = result.error_in_exec
    assert isinstance(err, remotecell.ClosureError)
    assert err.name == "mc_lock"
    assert "`mc_lock` (_thread.lock)" in str(err)
    assert len(client.list_jobs()) == jobs
    assert "mc_locked" not in ip.user_ns


def test_pull_nothing(ip: Any) -> None:
    value = ok(ip, "%%remote pull=[]\nmc_none = 1\nmc_none + 1\n")
    assert value == 2  # the cell's value still comes back
    assert "mc_none" not in ip.user_ns


def test_pull_only_the_named(ip: Any) -> None:
    ok(ip, '%%remote pull=["mc_a"]\nmc_a = 1\nmc_b = 2\n')
    assert ip.user_ns["mc_a"] == 1
    assert "mc_b" not in ip.user_ns


def test_unpicklable_result_is_skipped_with_a_message(
    ip: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(ip, "%%remote\nimport threading\nmc_rlock = threading.Lock()\nmc_fine = 5\n")
    assert ip.user_ns["mc_fine"] == 5
    assert "mc_rlock" not in ip.user_ns
    err = capsys.readouterr().err
    assert "not brought back: `mc_rlock` (_thread.lock)" in err
    assert "mc_fine" not in err
