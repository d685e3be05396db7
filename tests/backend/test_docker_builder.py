"""The docker builder, against a real Docker engine (see docker_engine.py).

Images are built from the default base image (scripts/docker_setup.sh) with pip reaching
the real package index, then checked by running a container of them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_engine import remove_image, require_engine, runtime_image

from remotecell.backend.images.builder import BuiltImage, step_progress
from remotecell.backend.images.docker import (
    BUILDER_LABEL,
    IMAGE_ID_LABEL,
    VENV_PYTHON,
    DockerBuilder,
    image_tag,
)
from remotecell.client.image import Image
from remotecell.contract.errors import ImageBuildError

#: Small, pure Python, and not installed where the tests run.
PACKAGE, VERSION = "termcolor", "2.4.0"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    client = require_engine()
    yield client
    client.close()


@pytest.fixture(scope="module", autouse=True)
def shared_layers(engine: Any) -> Iterator[None]:
    built = runtime_image()
    yield
    remove_image(engine, built.ref, keep_layers=True)


@pytest.fixture
def builder(engine: Any) -> Iterator[DockerBuilder]:
    made = DockerBuilder()
    yield made
    asyncio.run(made.close())


def build(builder: DockerBuilder, image: Image) -> tuple[BuiltImage, list[str]]:
    spec, blobs = image.to_spec()
    lines: list[str] = []

    def fetch(digest: str) -> bytes:
        return bytes(blobs[digest])

    built = asyncio.run(builder.build(spec, fetch, lines.append))
    return built, lines


def run_in(engine: Any, tag: str, code: str) -> str:
    """`docker run --rm --network host TAG python -c CODE`: its output."""
    out = engine.containers.run(tag, ["python", "-c", code], network_mode="host", remove=True)
    return bytes(out).decode()


@pytest.mark.slow
def test_an_image_has_its_steps_and_runs_the_runtime(
    builder: DockerBuilder, engine: Any, tmp_path: Path
) -> None:
    assert importlib.util.find_spec(PACKAGE) is None, f"{PACKAGE} must be missing here"
    (tmp_path / "hello.txt").write_text("hello from the notebook\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    (tree / "skip.log").write_text("left out")
    greeting = 'hello $HOME "quoted" \\ back'
    image = (
        Image.debian_slim()
        .pip_install(f"{PACKAGE}=={VERSION}")
        .env({"GREETING": greeting})
        .run_commands('echo "$GREETING" > /opt/marker', "echo built >> /opt/marker")
        .workdir("/srv/app")
        .add_local_file(tmp_path / "hello.txt")
        .add_local_dir(tree, "/data/tree", ignore=["*.log"])
    )
    spec, _ = image.to_spec()
    tag = image_tag(spec.id)
    try:
        built, lines = build(builder, image)
        assert built.ref == tag
        assert built.python == VENV_PYTHON
        assert built.env == {"GREETING": greeting}
        assert built.workdir == "/srv/app"
        assert builder.exists(built)

        # One progress line per step, in order, with the tools' output between them.
        progress = [step_progress(spec, i) for i in range(len(spec.steps))]
        assert [line for line in lines if line in progress] == progress
        assert lines[0] == "[base] debian_slim"
        assert lines[-1].startswith(f"built image {spec.id[:12]} in ")
        # After the pip step's line: pip's own output, or the engine's layer cache hit.
        after_pip = lines[lines.index(progress[0]) + 1]
        assert after_pip in (f"Collecting {PACKAGE}=={VERSION}", " ---> Using cache")

        report = json.loads(
            run_in(
                engine,
                tag,
                "import importlib.metadata, importlib.util, json, os, pathlib, sys\n"
                f"import {PACKAGE}\n"
                "tree = pathlib.Path('/data/tree')\n"
                "print(json.dumps({\n"
                f"  'version': importlib.metadata.version('{PACKAGE}'),\n"
                "  'greeting': os.environ['GREETING'],\n"
                "  'marker': pathlib.Path('/opt/marker').read_text(),\n"
                "  'file': pathlib.Path('hello.txt').read_text(),\n"
                "  'tree': sorted(str(p.relative_to(tree)) for p in tree.rglob('*')),\n"
                "  'cwd': os.getcwd(),\n"
                "  'python': sys.executable,\n"
                "  'runner': importlib.util.find_spec('remotecell.backend.runner') is not None,\n"
                "}))",
            )
        )
        assert report == {
            "version": VERSION,
            "greeting": greeting,
            "marker": f"{greeting}\nbuilt\n",
            "file": "hello from the notebook\n",
            "tree": ["a.txt", "sub", "sub/b.txt"],
            "cwd": "/srv/app",
            "python": VENV_PYTHON,
            "runner": True,
        }

        asyncio.run(builder.remove(built))
        assert not builder.exists(built)
        asyncio.run(builder.remove(built))  # gone already: not an error
    finally:
        remove_image(engine, tag)


def test_a_package_pip_cannot_find_names_the_step(builder: DockerBuilder, engine: Any) -> None:
    image = Image.debian_slim().env({"A": "1"}).pip_install("remotecell-no-such-package-zz9")
    spec, _ = image.to_spec()
    with pytest.raises(ImageBuildError) as raised:
        build(builder, image)
    message = str(raised.value)
    assert "step 2 of 2, pip install remotecell-no-such-package-zz9" in message
    assert "No matching distribution found for remotecell-no-such-package-zz9" in message
    assert not builder.exists(BuiltImage(spec.id, "docker", VENV_PYTHON, ref=image_tag(spec.id)))


def test_a_failing_command_names_the_step_with_its_last_lines(
    builder: DockerBuilder, engine: Any
) -> None:
    image = Image.debian_slim().run_commands("echo about to fail", "exit 3", "echo never")
    with pytest.raises(ImageBuildError) as raised:
        build(builder, image)
    message = str(raised.value)
    assert "step 1 of 1, run echo about to fail && exit 3 && echo never" in message
    assert "exit code 3" in message
    assert "about to fail" in message
    assert "never\n" not in message


def test_a_failing_dockerfile_base_names_the_base(
    builder: DockerBuilder, engine: Any, tmp_path: Path
) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM remotecell-base:bookworm\nRUN echo from the dockerfile && exit 4\n")
    with pytest.raises(ImageBuildError) as raised:
        build(builder, Image.from_dockerfile(dockerfile).pip_install(PACKAGE))
    message = str(raised.value)
    assert "base, from a Dockerfile: it failed with exit code 4" in message
    assert "from the dockerfile" in message


def test_a_python_the_base_image_lacks_is_a_clear_error(
    builder: DockerBuilder, engine: Any
) -> None:
    with pytest.raises(ImageBuildError) as raised:
        build(builder, Image.debian_slim(python="3.9"))
    message = str(raised.value)
    assert "base, debian_slim python 3.9" in message
    assert "use a base image with Python 3.9" in message


def test_no_engine_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-dockerd.sock'}")
    builder = DockerBuilder()
    with pytest.raises(ImageBuildError) as raised:
        build(builder, Image.debian_slim().pip_install(PACKAGE))
    message = str(raised.value)
    assert f"no Docker engine answers at unix://{tmp_path / 'no-dockerd.sock'}" in message
    assert "dockerd" in message and "docker_setup.sh" in message
    assert "venv builder" in message
    assert not builder.exists(BuiltImage("x", "docker", VENV_PYTHON, ref="remotecell-image:x"))


def test_prune_removes_the_images_not_kept(builder: DockerBuilder, engine: Any) -> None:
    kept, _ = build(builder, Image.debian_slim().env({"PRUNE": "keep"}))
    pruned, _ = build(builder, Image.debian_slim().env({"PRUNE": "go"}))
    try:
        labelled = engine.images.list(filters={"label": IMAGE_ID_LABEL})
        others = {image.labels[IMAGE_ID_LABEL] for image in labelled} - {pruned.image_id}
        assert asyncio.run(builder.prune(others | {pruned.image_id})) == []
        assert builder.exists(pruned)

        assert asyncio.run(builder.prune(others)) == [pruned.image_id]
        assert not builder.exists(pruned)
        assert builder.exists(kept)
        # What failed builds left (the tests above made some) is gone too.
        assert engine.images.list(filters={"dangling": True, "label": BUILDER_LABEL}) == []
    finally:
        remove_image(engine, kept.ref)
        remove_image(engine, pruned.ref)
