"""How an image gets built: the builder interface, shared by the venv and docker builders.

A builder turns an ``ImageSpec`` (whose ``id`` is already the content hash of its steps)
into a ``BuiltImage``: what an executor needs to start ``python -m remotecell.backend.runner``
inside it. Builders do not cache: ``cache.ImageCache`` decides whether to build, builds an
id once however many ask, and records what was built.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import re
import shlex
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import remotecell
from remotecell._proto import pb
from remotecell.contract.errors import ImageBuildError

#: Returns a blob's bytes by its content hash (the spec's local files and directories).
FetchBlob = Callable[[str], bytes]
#: Receives the build log, one line at a time (no trailing newline).
BuildLog = Callable[[str], None]

#: How many of a failed tool's last output lines an ImageBuildError carries.
ERROR_TAIL_LINES = 15


@dataclass(frozen=True)
class BuiltImage:
    """A built image: how to start a runner in it.

    Attributes:
        image_id: the spec's id.
        builder: the builder that built it (``"venv"``, ``"docker"``).
        python: the interpreter to run ``-m remotecell.backend.runner`` with (a path on
            this machine for the venv builder; inside the image for docker).
        env: variables a runner starts with, over the executor's own: the image's ``env``
            steps and the builder's (the venv builder sets ``VIRTUAL_ENV`` and a ``PATH``
            with the venv's ``bin`` first).
        workdir: the runner's working directory ("" = the executor's default).
        ref: where the image lives: the venv's directory, or the docker image tag.
        size_bytes: what it takes on disk (0 = unknown).
    """

    image_id: str
    builder: str
    python: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    ref: str = ""
    size_bytes: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BuiltImage:
        return cls(**json.loads(text))


class ImageBuilder(ABC):
    """Builds images of one kind (a uv venv, a docker image)."""

    name: str = "base"

    @abstractmethod
    async def build(self, spec: pb.ImageSpec, fetch_blob: FetchBlob, log: BuildLog) -> BuiltImage:
        """Builds ``spec`` from scratch, replacing whatever an earlier build of its id left.

        Logs one progress line per step (``step_progress``) and the tools' output as it comes.

        Raises:
            ImageBuildError: a step failed; the message names it (``step_label``) and ends
                with the tool's last lines. Whatever the failed build left is removed.
        """

    @abstractmethod
    def exists(self, built: BuiltImage) -> bool:
        """Whether what ``built`` describes is still there (nobody deleted the venv or tag)."""

    @abstractmethod
    async def remove(self, built: BuiltImage) -> None:
        """Deletes the built image; one that is already gone is not an error."""

    async def prune(self, keep: set[str]) -> list[str]:
        """Removes what this builder left that no image in ``keep`` (image ids) needs: the
        remains of interrupted builds, shared parts no image uses. Returns what it removed."""
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Releases what the builder holds (a docker client)."""


def describe_step(step: pb.ImageStep) -> str:
    """A step as the user wrote it, one short line: ``pip install torch==2.13.0``."""
    kind = step.kind
    if kind == pb.ImageStep.PIP:
        options = [f"--{k.replace('_', '-')} {v}" for k, v in sorted(step.options.items())]
        return shlex.join(["pip", "install", *step.args]) + "".join(f" {o}" for o in options)
    if kind == pb.ImageStep.APT:
        return shlex.join(["apt", "install", *step.args])
    if kind == pb.ImageStep.RUN:
        return "run " + " && ".join(step.args)
    if kind == pb.ImageStep.ENV:
        return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(step.env.items()))
    if kind == pb.ImageStep.WORKDIR:
        return f"workdir {step.dest}"
    if kind == pb.ImageStep.LOCAL_FILE:
        return f"add file {step.dest}"
    if kind == pb.ImageStep.LOCAL_DIR:
        return f"add dir {step.dest}"
    if kind == pb.ImageStep.PYTHON_SOURCE:
        return f"add python source {step.dest}"
    return f"step of kind {kind}"


def describe_base(spec: pb.ImageSpec) -> str:
    """The base as the user wrote it: ``debian_slim python 3.11``, ``from python:3.11-slim``."""
    if spec.base == pb.ImageSpec.REGISTRY:
        text = f"from {spec.base_ref}"
    elif spec.base == pb.ImageSpec.DOCKERFILE:
        text = "from a Dockerfile"
    else:
        text = "debian_slim"
    return f"{text} python {spec.python}" if spec.python else text


def step_label(spec: pb.ImageSpec, index: int) -> str:
    """``step 2 of 3, pip install nosuchpackage`` for ``spec.steps[index]`` (0-based);
    ``index`` -1 is the base: ``base, debian_slim python 3.11``."""
    if index < 0:
        return f"base, {describe_base(spec)}"
    return f"step {index + 1} of {len(spec.steps)}, {describe_step(spec.steps[index])}"


def step_progress(spec: pb.ImageSpec, index: int) -> str:
    """The progress line a builder logs as a step starts: ``[2/3] pip install ...``
    (``[base] ...`` for index -1)."""
    if index < 0:
        return f"[base] {describe_base(spec)}"
    return f"[{index + 1}/{len(spec.steps)}] {describe_step(spec.steps[index])}"


_PROGRESS = re.compile(r"^\[(base|runtime|\d+/\d+)\] |^built image ")


def is_progress(line: str) -> bool:
    """Whether a log line is a builder's own progress line rather than a tool's output."""
    return bool(_PROGRESS.match(line))


def tail(text: str, lines: int = ERROR_TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of a tool's output."""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def step_failed(spec: pb.ImageSpec, index: int, reason: str, output: str = "") -> ImageBuildError:
    """The error for a failed step (-1: the base): which step, why, and the tool's last lines."""
    message = f"image {spec.id[:12]}: {step_label(spec, index)}: {reason}"
    last = tail(output)
    return ImageBuildError(f"{message}\n{last}" if last else message)


#: remotecell's own dependencies that a runner does not need (secrets are decrypted by
#: the control plane only).
NOT_FOR_RUNNERS = {"uv", "cryptography", "pathspec"}  # pathspec: the kernel's snapshots only


def runtime_requirements(python: str) -> list[str]:
    """remotecell's own dependencies, as a runner needs them in an image whose Python is
    ``python`` ("" = unknown): pinned to this process's versions where the Python versions
    match (so a runner speaks exactly the control plane's protocol), else as declared.

    From the installed distribution's metadata, or its source checkout's pyproject.toml.
    """
    from packaging.requirements import Requirement

    try:
        declared = importlib.metadata.requires("remotecell") or []
    except importlib.metadata.PackageNotFoundError:
        declared = _checkout_requirements()
    same_python = python.split(".")[:2] == [str(v) for v in sys.version_info[:2]]
    out = []
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        if requirement.name.lower() in NOT_FOR_RUNNERS:
            continue
        if same_python:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                version = importlib.metadata.version(requirement.name)
                marker = f"; {requirement.marker}" if requirement.marker else ""
                text = f"{requirement.name}=={version}{marker}"
        out.append(text)
    return sorted(out)


def _checkout_requirements() -> list[str]:
    pyproject = Path(remotecell.__file__).parent.parent / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):
        import tomllib

        with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
            project = tomllib.loads(pyproject.read_text()).get("project", {})
            if project.get("name") == "remotecell":
                return list(project.get("dependencies", []))
    raise ImageBuildError(
        "cannot tell remotecell's dependencies: it is neither installed "
        "nor run from its source checkout; install it with pip"
    )
