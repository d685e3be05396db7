"""Issue 10's measure: each notebook in tests/notebooks/like_local, run by nbclient in a real
kernel as written and again with every code cell under ``%%remote`` (the job monitor off),
saves the same outputs. On failure the message is a diff per cell, local vs remote."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from like_local import ROOT, differences, execute, notebooks, report
from support import ControlPlane, short_tmpdir

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    """One control plane for the module's notebooks (each job starts as a fresh kernel would)."""
    cp = ControlPlane(short_tmpdir(), ["--cancel-grace", "2", "--reconnect-grace", "5"]).start()
    yield cp.env()
    cp.stop()
    shutil.rmtree(cp.data_dir, ignore_errors=True)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT).with_suffix(""))


def _kept(found: list[str], where: Path, **runs: object) -> list[str]:
    """On a difference, keeps both executed notebooks for a look in Jupyter."""
    if found:
        for label, nb in runs.items():
            nbformat.write(nb, where / f"{label}.ipynb")
        found.append(f"executed notebooks: {where}/{{{','.join(runs)}}}.ipynb")
    return found


@pytest.mark.parametrize("path", notebooks(), ids=_name)
def test_a_notebook_under_remote_saves_the_outputs_of_a_local_run(path, env, tmp_path):
    local, _ = execute(path, env)
    remote, _ = execute(path, env, remote=lambda index: True)
    found = _kept(differences(local, remote), tmp_path, local=local, remote=remote)
    assert not found, report(_name(path), found)


def test_input_answered_through_the_stdin_channel_saves_the_same_outputs(env, tmp_path):
    path = ROOT / "input.ipynb"
    answers = ["Ada", "hunter2", "shout"]
    local, asked_locally = execute(path, env, answers=answers)
    remote, asked_remotely = execute(path, env, remote=lambda index: True, answers=answers)
    assert asked_locally == [
        {"prompt": "Your name? ", "password": False},
        {"prompt": "Secret? ", "password": True},
        {"prompt": "", "password": False},
    ]
    assert asked_remotely == asked_locally
    found = _kept(differences(local, remote), tmp_path, local=local, remote=remote)
    assert not found, report("input (answered)", found)


def test_notebook_classes_work_between_local_and_remote_cells(env, tmp_path):
    """Every other cell remote: enums and dataclasses cross in both directions."""
    path = ROOT / "enums_dataclasses.ipynb"
    local, _ = execute(path, env)
    for parity in (0, 1):
        mixed, _ = execute(path, env, remote=lambda index, parity=parity: index % 2 == parity)
        found = _kept(differences(local, mixed), tmp_path, local=local, mixed=mixed)
        assert not found, report(f"enums_dataclasses (remote cells {parity}::2)", found)


def test_the_comparison_sees_a_different_output(env):
    """A test that cannot fail is a defect: the comparison must name each mutated cell,
    and only that one, and must not mind what legitimately differs."""
    local, _ = execute(ROOT / "rich_displays.ipynb", env)
    cells = {cell.source.splitlines()[0]: cell for cell in local.cells if cell.cell_type == "code"}
    assert differences(local, copy.deepcopy(local)) == []

    same = copy.deepcopy(local)
    for cell in same.cells:
        for output in cell.get("outputs", []):
            if "execution_count" in output:
                output["execution_count"] += 100
    assert differences(local, same) == []

    def mutated(first_line: str, change) -> list[str]:
        other = copy.deepcopy(local)
        index = local.cells.index(cells[first_line])
        change(other.cells[index].outputs)
        found = differences(local, other)
        assert len(found) == 1 and found[0].startswith(f"cell {index}: {first_line}"), found
        return found

    heading = 'display(Markdown("# A heading'
    found = mutated(
        heading + '\\n\\nSome *emphasis* and `code`."))',
        lambda outs: outs[0]["data"].update({"text/markdown": "# Another heading"}),
    )
    assert "-" in found[0] and "Another heading" in found[0]
    png_cell = next(line for line in cells if line.startswith("png = "))
    mutated(png_cell, lambda outs: outs[0]["data"].update({"image/png": "iVBORw0KGgo="}))
    mutated(png_cell, lambda outs: outs.pop())
    mutated("class Card:", lambda outs: outs[0]["metadata"].update({"isolated": True}))
    mutated(
        "class Card:",
        lambda outs: outs.insert(0, {"output_type": "stream", "name": "stderr", "text": "x\n"}),
    )

    errors, _ = execute(ROOT / "errors_unicode_empty.ipynb", env)
    error_cell = next(c for c in errors.cells if c.source.startswith("def divide"))
    index = errors.cells.index(error_cell)
    for key, value in [("evalue", "division by two"), ("ename", "ValueError")]:
        other = copy.deepcopy(errors)
        other.cells[index].outputs[0][key] = value
        assert len(differences(errors, other)) == 1
    other = copy.deepcopy(errors)
    other.cells[index].outputs[0]["traceback"][-2] = (
        "Cell In[6], line 2, in divide(a, b)\n----> 2     return a // b\n"
    )
    (found,) = differences(errors, other)
    assert '- "line in the cell": "return a / b"' in found
    assert '+ "line in the cell": "return a // b"' in found
