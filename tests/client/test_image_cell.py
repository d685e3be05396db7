"""The %%remote_image line language: each line kind, and an error for each bad line."""

from __future__ import annotations

import importlib

import pytest

from remotecell.client.image import Image
from remotecell.client.image_cell import parse_image_cell
from remotecell.contract.errors import ConfigError


def test_the_issue_example_is_the_same_image_as_the_api():
    cell = """
python 3.11
pip torch==2.13.0 transformers
apt ffmpeg
env HF_HOME=/models
run python -c "import torch"
"""
    expected = (
        Image.debian_slim(python="3.11")
        .pip_install("torch==2.13.0", "transformers")
        .apt_install("ffmpeg")
        .env({"HF_HOME": "/models"})
        .run_commands('python -c "import torch"')
    )
    assert parse_image_cell(cell) == expected
    assert parse_image_cell(cell).id == expected.id


def test_every_line_kind(tmp_path, monkeypatch):
    (tmp_path / "model.py").write_text("W = 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1\n")
    (tmp_path / "requirements.txt").write_text("tabulate==0.9.0\n")
    (tmp_path / "celltest_pkg").mkdir()
    (tmp_path / "celltest_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    cell = r"""
# comments and blank lines are skipped

from python:3.12-slim
python 3.12
pip numpy>=2 'pandas<3' --index-url https://example.org/simple -f https://example.org/wheels
pip -r requirements.txt
pip a \
    b   # a continuation, then a comment
apt ffmpeg git
env A=1 B="two words"
run echo "$A" && echo done   # the shell sees the comment
workdir app
add model.py
add model.py lib/model2.py
add data data_copy --ignore *.tmp --ignore=.git
source celltest_pkg
"""
    image = parse_image_cell(cell, base_dir=tmp_path)
    expected = (
        Image.from_registry("python:3.12-slim", python="3.12")
        .pip_install(
            "numpy>=2",
            "pandas<3",
            index_url="https://example.org/simple",
            find_links="https://example.org/wheels",
        )
        .pip_install_from_requirements(tmp_path / "requirements.txt")
        .pip_install("a", "b")
        .apt_install("ffmpeg", "git")
        .env({"A": "1", "B": "two words"})
        .run_commands('echo "$A" && echo done   # the shell sees the comment')
        .workdir("app")
        .add_local_file(tmp_path / "model.py")
        .add_local_file(tmp_path / "model.py", "lib/model2.py")
        .add_local_dir(tmp_path / "data", "data_copy", ignore=["*.tmp", ".git"])
        .add_local_python_source("celltest_pkg")
    )
    assert image == expected
    assert image.id == expected.id


def test_relative_paths_default_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "model.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert parse_image_cell("add model.py").steps == (f"add {tmp_path / 'model.py'} -> model.py",)


def test_an_empty_cell_is_a_plain_image():
    assert parse_image_cell("\n# nothing\n\n") == Image.debian_slim()


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (
            "python 3.11\npipp torch",
            r"^line 2: unknown step 'pipp' \(did you mean 'pip'\?\); valid steps: from, python, pip, apt, env, run, workdir, add, source$",
        ),
        ("\n\nfrobnicate x", r"^line 3: unknown step 'frobnicate'; valid steps: "),
        ("pip", r"^line 1: pip needs at least one package"),
        ("pip --index-url https://x", r"^line 1: pip needs at least one package"),
        ("pip torch --pre", r"^line 1: pip option --pre is not supported"),
        ("pip torch --no-deps x", r"^line 1: pip option --no-deps is not supported"),
        ("pip torch --index-url", r"^line 1: pip --index-url needs a value"),
        ("pip -r missing.txt", r"^line 1: requirements file .*missing\.txt does not exist"),
        ("apt", r"^line 1: apt needs at least one package"),
        ("env", r"^line 1: env needs at least one KEY=VALUE"),
        ("env FOO", r"^line 1: env takes KEY=VALUE pairs; 'FOO' has no '='"),
        ("env =x", r"^line 1: env takes KEY=VALUE pairs; '=x' has no '='"),
        ("env 1A=x", r"^line 1: '1A' is not an environment variable name"),
        ("run", r"^line 1: run needs a shell command"),
        ("workdir", r"^line 1: workdir takes exactly one directory"),
        ("workdir a b", r"^line 1: workdir takes exactly one directory"),
        ("python", r"^line 1: python takes exactly one value"),
        ("python 3.11 3.12", r"^line 1: python takes exactly one value"),
        ("python three", r"^line 1: python='three' is not a Python version"),
        ("python 3.11\n# x\npython 3.12", r"^line 3: python is given twice \(first on line 1\)"),
        ("from a\nfrom b", r"^line 2: from is given twice \(first on line 1\)"),
        ("add", r"^line 1: add takes a local path"),
        ("add a b c", r"^line 1: add takes a local path"),
        ("add nope.py", r"^line 1: local file .*nope\.py does not exist"),
        ("add --force x", r"^line 1: add option --force is not supported"),
        ("add x --ignore", r"^line 1: add --ignore needs a glob pattern"),
        ("env A='unclosed", r"^line 1: no closing quotation in "),
        ("source", r"^line 1: source needs at least one module name"),
        ("source no_such_module_xyz", r"^line 1: no module 'no_such_module_xyz' is importable"),
        ("pip a \\\n  b\nbogus", r"^line 3: unknown step 'bogus'"),
    ],
)
def test_each_bad_line_is_named(tmp_path, cell, message):
    with pytest.raises(ConfigError, match=message):
        parse_image_cell(cell, base_dir=tmp_path)


def test_add_ignore_applies_to_directories_only(tmp_path):
    (tmp_path / "model.py").write_text("")
    with pytest.raises(ConfigError, match=r"^line 1: add --ignore applies to directories"):
        parse_image_cell("add model.py --ignore *.pyc", base_dir=tmp_path)
