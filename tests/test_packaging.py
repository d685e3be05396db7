"""What a newcomer's machine needs: the package builds without Node.js, and the test extra
installs without the multi-GB CUDA build of PyTorch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support import missing

ROOT = Path(__file__).resolve().parent.parent
#: Node.js and the package managers that come with it.
NODE_TOOLS = {"node", "nodejs", "npm", "npx", "corepack", "yarn", "yarnpkg", "jlpm"}


def path_without_node(into: Path) -> str:
    """A PATH with every program of this one except Node.js and its package managers."""
    into.mkdir()
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not entry or not Path(entry).is_dir():
            continue
        for program in Path(entry).iterdir():
            link = into / program.name
            if program.name in NODE_TOOLS or link.exists() or link.is_symlink():
                continue
            if program.is_file() and os.access(program, os.X_OK):
                link.symlink_to(program)
    python = into / "python3"
    if not python.exists():
        python.symlink_to(sys.executable)
    return str(into)


def test_the_wheel_builds_its_widgets_on_a_machine_without_node(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        missing("needs a git checkout (the test builds the files git tracks)")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    src = tmp_path / "src"
    for name in files:
        if name.startswith("remotecell/widgets/static/") or not (ROOT / name).is_file():
            continue  # the built widgets are what this build must make
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    env = {**os.environ, "PATH": path_without_node(tmp_path / "bin")}
    assert shutil.which("node", path=env["PATH"]) is None
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = tmp_path.glob("remotecell-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for widget in ("monitor.js", "inventory.js", "job_table.js", "style.css"):
        assert f"remotecell/widgets/static/{widget}" in names
    assert not [n for n in names if "nodejs" in n or n.endswith("/node")]


def test_the_test_extra_pulls_no_cuda_build_of_pytorch() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needs = project["dependencies"] + project["optional-dependencies"]["test"]
    named = {
        n.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
        for n in needs
    }
    assert not named & {"torch", "torchvision", "torchaudio", "triton"}
    assert not [n for n in named if n.startswith("nvidia-") and n != "nvidia-ml-py"]


def test_the_test_extra_holds_every_third_party_module_the_tests_import() -> None:
    """A fresh venv with only the package and its test extra can collect every test."""
    import ast
    import importlib.metadata as metadata

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        _name(n) for n in project["dependencies"] + project["optional-dependencies"]["test"]
    }
    provided: dict[str, set[str]] = {}  # top-level module -> distributions
    for module, dists in metadata.packages_distributions().items():
        provided[module] = {_name(d) for d in dists}
    local = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"remotecell", "support"}
    optional = {"torch", "ray", "ipyparallel", "docker"}  # skip without them (support.missing)
    undeclared = set()
    for path in (ROOT / "tests").rglob("*.py"):
        if "notebooks" in path.parts:
            continue
        for node in ast.parse(path.read_text()).body:  # what collecting the module imports
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top in local or top in optional or top in sys.stdlib_module_names:
                    continue
                if not provided.get(top, set()) & declared:
                    undeclared.add(f"{top} ({path.relative_to(ROOT)})")
    assert not undeclared, sorted(undeclared)


def _name(requirement: str) -> str:
    import re

    return re.split(r"[\s\[;<>=!~]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")
