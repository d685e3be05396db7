"""remotecell.Image: immutable steps, the wire spec, ids, local files, from_local."""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

import remotecell
from remotecell._proto import pb
from remotecell.client.image import Image
from remotecell.contract.errors import ConfigError
from remotecell.contract.images import spec_id
from remotecell.contract.values import content_hash


def members(blob: bytes | memoryview) -> dict[str, bytes | None]:
    """A tar's entries: file name -> content (None for directories and links)."""
    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(bytes(blob))) as tar:
        for info in tar.getmembers():
            f = tar.extractfile(info) if info.isfile() else None
            out[info.name] = f.read() if f else None
    return out


def test_each_method_returns_a_new_image_and_leaves_the_old_one_alone():
    base = Image.debian_slim(python="3.11")
    derived = base.pip_install("tabulate==0.9.0").env({"A": "1"})
    assert base.steps == ()
    assert derived.steps == ("pip install tabulate==0.9.0", "env A=1")
    assert base.python == derived.python == "3.11"
    with pytest.raises(AttributeError):
        base.python = "3.12"  # type: ignore[misc]
    assert remotecell.Image is Image


def test_the_spec_holds_every_kind_of_step(tmp_path):
    (tmp_path / "model.py").write_text("WEIGHTS = 1\n")
    img = (
        Image.debian_slim(python="3.12")
        .pip_install(
            "torch==2.13.0",
            ["transformers"],
            index_url="https://example.org/simple",
            extra_index_url="https://extra.example.org/simple",
            find_links="https://example.org/wheels",
        )
        .apt_install("ffmpeg", "git")
        .run_commands("echo one", "echo two")
        .env({"HF_HOME": "/models"})
        .workdir("app")
        .add_local_file(tmp_path / "model.py")
    )
    spec, blobs = img.to_spec()
    assert spec.base == pb.ImageSpec.DEBIAN_SLIM and spec.python == "3.12"
    pip, apt, run, env, workdir, local = spec.steps
    assert pip.kind == pb.ImageStep.PIP and list(pip.args) == ["torch==2.13.0", "transformers"]
    assert dict(pip.options) == {
        "index_url": "https://example.org/simple",
        "extra_index_url": "https://extra.example.org/simple",
        "find_links": "https://example.org/wheels",
    }
    assert apt.kind == pb.ImageStep.APT and list(apt.args) == ["ffmpeg", "git"]
    assert run.kind == pb.ImageStep.RUN and list(run.args) == ["echo one", "echo two"]
    assert env.kind == pb.ImageStep.ENV and dict(env.env) == {"HF_HOME": "/models"}
    assert workdir.kind == pb.ImageStep.WORKDIR and workdir.dest == "app"
    assert local.kind == pb.ImageStep.LOCAL_FILE and local.dest == "model.py"
    assert bytes(blobs[local.blob]) == b"WEIGHTS = 1\n"
    assert local.blob == content_hash(b"WEIGHTS = 1\n")
    assert spec.id == spec_id(spec) and len(spec.id) == 32


def test_empty_steps_add_nothing():
    base = Image.debian_slim()
    assert base.pip_install() is base
    assert base.apt_install([]) is base
    assert base.run_commands() is base
    assert base.env({}) is base


def test_the_id_is_stable_and_follows_content_not_declaration(tmp_path):
    def make() -> Image:
        return Image.debian_slim(python="3.11").pip_install("a", "b").env({"X": "1", "Y": "2"})

    assert make().id == make().id == make().to_spec()[0].id
    assert make().id != make().pip_install("c").id
    assert (
        make().id
        != Image.debian_slim(python="3.12").pip_install("a", "b").env({"X": "1", "Y": "2"}).id
    )
    # the order of pip arguments is part of the step as written
    assert (
        make().id
        != Image.debian_slim(python="3.11").pip_install("b", "a").env({"X": "1", "Y": "2"}).id
    )
    # the order of a dict of variables is not
    assert (
        make().id
        == Image.debian_slim(python="3.11").pip_install("a", "b").env({"Y": "2", "X": "1"}).id
    )
    # force_build rebuilds the same image: same id
    spec, _ = make().to_spec(force_build=True)
    assert spec.force_build and spec.id == make().id


def test_the_id_covers_local_file_content_read_when_sent(tmp_path):
    file = tmp_path / "model.py"
    file.write_text("v = 1\n")
    img = Image.debian_slim().add_local_file(file, "model.py")
    first = img.id
    assert img.id == first
    file.write_text("v = 2\n")
    assert img.id != first  # read at to_spec: the runner gets the file as it is now
    file.write_text("v = 1\n")
    assert img.id == first
    # where the file is on this machine does not count; where it goes does
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.py").write_text("v = 1\n")
    assert Image.debian_slim().add_local_file(other / "model.py", "model.py").id == first
    assert Image.debian_slim().add_local_file(file, "elsewhere.py").id != first


def test_a_local_dir_is_a_deterministic_tar_honouring_ignore(tmp_path):
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("X = 1\n")
    (src / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (src / "data").mkdir()
    (src / "data" / "a.csv").write_text("1,2\n")
    (src / "data" / "b.tmp").write_text("scratch\n")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)

    img = Image.debian_slim().add_local_dir(src, "code", ignore=[".git", "__pycache__", "*.tmp"])
    spec, blobs = img.to_spec()
    (step,) = spec.steps
    assert step.kind == pb.ImageStep.LOCAL_DIR and step.dest == "code"
    entries = members(blobs[step.blob])
    files = {name: data for name, data in entries.items() if data is not None}
    assert files == {
        "data/a.csv": b"1,2\n",
        "pkg/__init__.py": b"X = 1\n",
        "run.sh": b"#!/bin/sh\n",
    }
    with tarfile.open(fileobj=io.BytesIO(bytes(blobs[step.blob]))) as tar:
        assert tar.getmember("run.sh").mode == 0o755
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())

    # times do not change the id; content and ignored-ness do
    os.utime(src / "data" / "a.csv", (1, 1))
    assert img.id == spec.id
    (src / "data" / "b.tmp").write_text("changed, but ignored\n")
    assert img.id == spec.id
    (src / "data" / "a.csv").write_text("1,3\n")
    assert img.id != spec.id
    # a pattern with a slash matches the path relative to the directory
    only = Image.debian_slim().add_local_dir(src, ignore=["data/*", ".git", "pkg"])
    blob = only.to_spec()[0].steps[0]
    assert blob.dest == "src"
    assert {n for n, d in members(only.to_spec()[1][blob.blob]).items() if d is not None} == {
        "run.sh"
    }


def test_local_python_source_ships_the_package_without_bytecode(tmp_path, monkeypatch):
    pkg = tmp_path / "shipme_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import VALUE\n")
    (pkg / "sub" / "__init__.py").write_text("VALUE = 42\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    (tmp_path / "shipme_mod.py").write_text("NAME = 'mod'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()

    spec, blobs = Image.debian_slim().add_local_python_source("shipme_pkg", "shipme_mod").to_spec()
    package, module = spec.steps
    assert package.kind == module.kind == pb.ImageStep.PYTHON_SOURCE
    assert (package.dest, module.dest) == ("shipme_pkg", "shipme_mod")
    files = {n for n, d in members(blobs[package.blob]).items() if d is not None}
    assert files == {"shipme_pkg/__init__.py", "shipme_pkg/sub/__init__.py"}
    assert members(blobs[module.blob]) == {"shipme_mod.py": b"NAME = 'mod'\n"}


def test_missing_local_paths_are_config_errors_at_the_call(tmp_path):
    with pytest.raises(ConfigError, match=r"local file .*nope\.py does not exist"):
        Image.debian_slim().add_local_file(tmp_path / "nope.py")
    with pytest.raises(ConfigError, match="is a directory"):
        Image.debian_slim().add_local_file(tmp_path)
    with pytest.raises(ConfigError, match=r"local directory .*nodir does not exist"):
        Image.debian_slim().add_local_dir(tmp_path / "nodir")
    with pytest.raises(ConfigError, match="no module 'no_such_module_xyz' is importable"):
        Image.debian_slim().add_local_python_source("no_such_module_xyz")
    with pytest.raises(ConfigError, match="top-level module name"):
        Image.debian_slim().add_local_python_source("os.path")
    with pytest.raises(ConfigError, match="compiled module"):
        Image.debian_slim().add_local_python_source("_json" if "_json" in sys.modules else "math")
    with pytest.raises(ConfigError, match="requirements file"):
        Image.debian_slim().pip_install_from_requirements(tmp_path / "requirements.txt")
    with pytest.raises(ConfigError, match="Dockerfile"):
        Image.from_dockerfile(tmp_path / "Dockerfile")

    # a file removed after it was added: the error comes when the image is sent
    file = tmp_path / "gone.py"
    file.write_text("")
    img = Image.debian_slim().add_local_file(file)
    file.unlink()
    with pytest.raises(ConfigError, match=r"gone\.py no longer exists"):
        img.to_spec()


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="not a Python version"):
        Image.debian_slim(python="python3")
    with pytest.raises(ConfigError, match="not a Python version"):
        Image.debian_slim(python="2.7")
    with pytest.raises(ConfigError, match="not an environment variable name"):
        Image.debian_slim().env({"1BAD": "x"})
    with pytest.raises(ConfigError, match="must be a string"):
        Image.debian_slim().env({"GOOD": 1})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="takes strings"):
        Image.debian_slim().pip_install(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not an image reference"):
        Image.from_registry("has space")


def test_requirements_file_with_options_and_nested_files(tmp_path):
    (tmp_path / "base.txt").write_text("tabulate==0.9.0\n")
    (tmp_path / "requirements.txt").write_text(
        "# a comment\n"
        "-r base.txt\n"
        "--index-url https://example.org/simple\n"
        "--extra-index-url=https://extra.example.org/simple\n"
        "requests>=2  # trailing comment\n"
        "\n"
    )
    spec, _ = (
        Image.debian_slim().pip_install_from_requirements(tmp_path / "requirements.txt").to_spec()
    )
    (step,) = spec.steps
    assert list(step.args) == ["tabulate==0.9.0", "requests>=2"]
    assert dict(step.options) == {
        "index_url": "https://example.org/simple",
        "extra_index_url": "https://extra.example.org/simple",
    }
    (tmp_path / "bad.txt").write_text("-e .\n")
    with pytest.raises(ConfigError, match=r"bad\.txt, line 1: -e is not supported"):
        Image.debian_slim().pip_install_from_requirements(tmp_path / "bad.txt")


def test_pyproject_dependencies_and_optional_groups(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\ndependencies = ["tabulate==0.9.0"]\n'
        '[project.optional-dependencies]\ngpu = ["cupy"]\nplot = ["matplotlib"]\n'
    )
    img = Image.debian_slim().pip_install_from_pyproject(tmp_path / "pyproject.toml")
    assert img.steps == ("pip install tabulate==0.9.0",)
    img = Image.debian_slim().pip_install_from_pyproject(
        tmp_path / "pyproject.toml", optional_dependencies=["gpu"]
    )
    assert img.steps == ("pip install tabulate==0.9.0 cupy",)
    with pytest.raises(ConfigError, match="no optional dependencies 'cuda'; it has: gpu, plot"):
        Image.debian_slim().pip_install_from_pyproject(
            tmp_path / "pyproject.toml", optional_dependencies=["cuda"]
        )


def test_registry_and_dockerfile_bases(tmp_path):
    spec, _ = Image.from_registry("python:3.11-slim").pip_install("x").to_spec()
    assert spec.base == pb.ImageSpec.REGISTRY and spec.base_ref == "python:3.11-slim"
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    spec, _ = Image.from_dockerfile(tmp_path / "Dockerfile").to_spec()
    assert spec.base == pb.ImageSpec.DOCKERFILE and spec.dockerfile == "FROM python:3.11-slim\n"
    assert Image.from_registry("python:3.11-slim").id != Image.from_registry("python:3.12-slim").id


def test_repr_is_short():
    img = Image.debian_slim(python="3.11").pip_install(*[f"package{i}" for i in range(50)])
    img = img.apt_install("ffmpeg").env({"A": "1"}).run_commands("true")
    text = repr(img)
    assert text.startswith("Image(debian_slim python=3.11, pip install package0 package1")
    assert "... 1 more" in text and len(text) < 200


def test_from_local_pins_the_kernels_versions_of_imported_distributions():
    import dill  # noqa: F401 - imported so that from_local must pin it
    import xxhash  # noqa: F401

    img = Image.from_local()
    assert img.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    spec, _ = img.to_spec()
    pins = [arg for step in spec.steps if step.kind == pb.ImageStep.PIP for arg in step.args]
    versions = dict(pin.split("==") for pin in pins)
    assert versions, "from_local pinned nothing"
    for name, version in versions.items():
        assert importlib.metadata.version(name) == version, name
    normalised = {name.lower().replace("_", "-") for name in versions}
    for expected in ("dill", "xxhash", "grpcio", "protobuf", "pytest"):
        assert expected in normalised
    assert "remotecell" not in normalised  # the runner brings it
    assert not any(name in normalised for name in ("tabulate",)), "not imported here"


def test_from_local_ships_locally_installed_projects_as_source(tmp_path, monkeypatch):
    # A project installed from a local directory (`pip install -e .`) has no version on
    # any index: from_local ships its imported modules instead.
    (tmp_path / "localproj_xyz").mkdir()
    (tmp_path / "localproj_xyz" / "__init__.py").write_text("HELLO = 1\n")
    info = tmp_path / "localproj_xyz-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: localproj-xyz\nVersion: 0.1\n")
    (info / "top_level.txt").write_text("localproj_xyz\n")
    (info / "direct_url.json").write_text(
        json.dumps({"url": f"file://{tmp_path}", "dir_info": {"editable": True}})
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    import localproj_xyz  # noqa: F401

    try:
        img = Image.from_local()
    finally:
        del sys.modules["localproj_xyz"]
    assert "add python source localproj_xyz" in img.steps
    assert not any("localproj" in step for step in img.steps if step.startswith("pip"))


def test_image_module_is_lazy_in_the_package():
    import subprocess

    code = "import remotecell, sys; print('remotecell.client.image' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert Path(remotecell.__file__).exists()
