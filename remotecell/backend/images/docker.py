"""Docker images from image specs: a Dockerfile with one layer per step, built by the engine.

The generated Dockerfile starts from a base (the configured base image for
``debian_slim``, the spec's registry reference, or the spec's own Dockerfile), makes a
virtual environment at ``/opt/remotecell/venv`` (first on ``PATH``, so ``pip`` and
``python`` in later steps and in cells mean the venv's), installs the remotecell runtime's
dependencies, then one layer per step, then remotecell itself (a copy of the running
package, put on ``sys.path`` by a ``.pth`` file) and a check that the runner imports.

The runtime's dependencies come before the user's steps so that layer is shared by every
image on the same base; the package comes last so that a changed remotecell rebuilds one
small layer. Builds use the host's network (``network_mode="host"``) and, where the host
trusts a CA bundle of its own, that bundle: copied into the image and named by build
arguments, so pip trusts it during the build without it becoming the image's environment.

Images are tagged ``remotecell-image:<id>`` and labelled ``remotecell.image-id``; every
layer the builder makes is labelled ``remotecell.builder``, so ``prune`` finds the layers
failed builds left.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shlex
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import remotecell
from remotecell._proto import pb
from remotecell.backend import _docker
from remotecell.backend.images.builder import (
    BuildLog,
    BuiltImage,
    FetchBlob,
    ImageBuilder,
    runtime_requirements,
    step_failed,
    step_progress,
    tail,
)
from remotecell.client._image_local import deterministic_tar
from remotecell.client.errors import ImageBuildError

DEFAULT_BASE_IMAGE = "remotecell-base:bookworm"
TAG_REPOSITORY = "remotecell-image"
IMAGE_ID_LABEL = "remotecell.image-id"
#: On every layer the builder makes (the same value, so layers stay shared): what a failed
#: or interrupted build left is found by it.
BUILDER_LABEL = "remotecell.builder"

ROOT = "/opt/remotecell"
VENV = f"{ROOT}/venv"
VENV_PYTHON = f"{VENV}/bin/python"
RUNTIME_DIR = f"{ROOT}/runtime"
PYTHON_SOURCE_DIR = f"{ROOT}/python-source"
CA_BUNDLE_PATH = f"{ROOT}/ca-certificates.crt"

#: Distributions remotecell depends on that a runner never imports.
#: Settings of the host's pip handed to builds as build arguments when set (values that
#: name local files are of no use inside a build and are left out).
PIP_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")

#: Makes the venv with the base image's Python: $1 the version asked for ("" = any),
#: $2 "1" to see the base image's own packages (registry images bring torch & co).
MAKE_VENV = r"""#!/bin/sh
set -e
want="$1"
py=""
for candidate in ${want:+python$want} python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then py=$(command -v "$candidate"); break; fi
done
if [ -z "$py" ]; then
    echo "remotecell: the base image has no python3; use a base image with Python ${want:-3}" >&2
    exit 3
fi
"$py" - "$want" <<'EOF'
import sys
want = sys.argv[1]
have = "%d.%d.%d" % sys.version_info[:3]
if want and have != want and not have.startswith(want + "."):
    sys.exit(f"remotecell: the image asks for Python {want}, but the base image's "
             f"{sys.executable} is Python {have}; use a base image with Python {want}")
EOF
opts=""
if [ "$2" = 1 ]; then opts="--system-site-packages"; fi
if ! "$py" -m venv $opts /opt/remotecell/venv; then
    echo "remotecell: $py cannot make a virtual environment; install its venv module" \
         "(Debian: the python3-venv package) in the base image" >&2
    exit 3
fi
/opt/remotecell/venv/bin/python - <<'EOF'
import pathlib, sysconfig
site = pathlib.Path(sysconfig.get_path("purelib"))
(site / "remotecell-runtime.pth").write_text("/opt/remotecell/runtime\n/opt/remotecell/python-source\n")
EOF
"""

RUNTIME = "the remotecell runtime"
#: The owner of the base's instructions and of the Python environment made on it.
BASE = -1

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DOCKER_STEP = re.compile(r"^Step (\d+)/(\d+) : ")
_EXIT_CODE = re.compile(r"returned a non-zero code: (\d+)")
# The engine's bookkeeping, not the tools' output; a cache hit is worth a line in the log.
_CACHED = " ---> Using cache"
_NOISE = re.compile(
    r"^( ---> (?!Using cache)|Removing intermediate container |Successfully (built|tagged) )"
)


def image_tag(image_id: str) -> str:
    return f"{TAG_REPOSITORY}:{image_id}"


@dataclass
class _Plan:
    """A Dockerfile, who owns each of its instructions, and the files of its build context.

    An owner is a step's index in the spec (-1: the base, with the Python environment made
    on it), or the name of a part of the build that is remotecell's own.
    """

    instructions: list[str] = field(default_factory=list)
    owners: list[int | str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    prefix: str = ""  # the spec's own Dockerfile, whose instructions are not counted here

    def add(self, owner: int | str, instruction: str) -> None:
        self.instructions.append(instruction)
        self.owners.append(owner)

    @property
    def dockerfile(self) -> str:
        ours = "\n".join(self.instructions) + "\n"
        return f"{self.prefix.rstrip()}\n{ours}" if self.prefix else ours

    def owner(self, step: int, total: int) -> int | str:
        """Who owns the engine's ``Step step/total`` (1-based, counting the spec's Dockerfile)."""
        index = step - 1 - (total - len(self.instructions))
        return self.owners[index] if 0 <= index < len(self.owners) else BASE


def plan(
    spec: pb.ImageSpec,
    fetch_blob: FetchBlob,
    *,
    base_image: str,
    requirements: Callable[[str], list[str]],
    runtime_tar: bytes,
    build_args: list[str],
    ca_bundle: bytes | None,
) -> _Plan:
    """The Dockerfile and build context for ``spec``.

    Raises:
        ImageBuildError: a step cannot be written as a Dockerfile instruction.
    """
    out = _Plan()
    base = spec.base
    if base == pb.ImageSpec.DOCKERFILE:
        if not spec.dockerfile.strip():
            raise ImageBuildError(f"image {spec.id[:12]}: its Dockerfile is empty")
        out.prefix = spec.dockerfile
    else:
        ref = spec.base_ref if base == pb.ImageSpec.REGISTRY else base_image
        out.add(BASE, f"FROM {ref}")
    # A base that switched to its own user (Jupyter's images do) could not write /opt.
    out.add(BASE, "USER root")
    out.add(BASE, f'LABEL {BUILDER_LABEL}="docker"')

    for name in build_args:
        out.add(BASE, f"ARG {name}")
    if ca_bundle is not None:
        out.files["_remotecell/ca-certificates.crt"] = ca_bundle
        out.add(BASE, _copy("_remotecell/ca-certificates.crt", CA_BUNDLE_PATH))

    want = spec.python
    if not want and base == pb.ImageSpec.DEBIAN_SLIM:  # empty: the control plane's own
        want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    system_site = "0" if base == pb.ImageSpec.DEBIAN_SLIM else "1"
    out.files["_remotecell/make_venv.sh"] = MAKE_VENV.encode()
    out.add(BASE, _copy("_remotecell/make_venv.sh", f"{ROOT}/make_venv.sh"))
    out.add(BASE, _run(["/bin/sh", f"{ROOT}/make_venv.sh", want, system_site]))
    out.add(
        BASE,
        f"ENV VIRTUAL_ENV={VENV} PATH={VENV}/bin:"
        "${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}",
    )
    out.add(
        "the remotecell runtime's dependencies",
        _run([VENV_PYTHON, "-m", "pip", "install", "--no-cache-dir", *requirements(want)]),
    )

    for index, step in enumerate(spec.steps):
        out.add(index, _instruction(spec, index, step, fetch_blob, out.files))

    runtime = RUNTIME
    out.files["_remotecell/runtime.tar"] = runtime_tar
    out.add(runtime, _add("_remotecell/runtime.tar", f"{RUNTIME_DIR}/"))
    out.add(runtime, _run([VENV_PYTHON, "-c", "import remotecell.backend.runner._main"]))
    # In the Dockerfile, not the engine's `labels=`: that adds a step the plan cannot see.
    out.add(runtime, f'LABEL {IMAGE_ID_LABEL}="{spec.id}"')
    return out


def _instruction(
    spec: pb.ImageSpec,
    index: int,
    step: pb.ImageStep,
    fetch_blob: FetchBlob,
    files: dict[str, bytes],
) -> str:
    kind = step.kind
    if kind == pb.ImageStep.PIP:
        options: list[str] = []
        for key, value in sorted(step.options.items()):
            options += [f"--{key.replace('_', '-')}", value]
        return _run([VENV_PYTHON, "-m", "pip", "install", "--no-cache-dir", *options, *step.args])
    if kind == pb.ImageStep.APT:
        packages = " ".join(shlex.quote(name) for name in step.args)
        return _run(
            [
                "/bin/sh",
                "-c",
                "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                f"--no-install-recommends {packages} && rm -rf /var/lib/apt/lists/*",
            ]
        )
    if kind == pb.ImageStep.RUN:
        return _run(["/bin/sh", "-c", "set -e\n" + "\n".join(step.args)])
    if kind == pb.ImageStep.ENV:
        pairs = []
        for key, value in sorted(step.env.items()):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or "\n" in value:
                raise step_failed(
                    spec, index, "a Dockerfile cannot set it (a bad name, or a line break)"
                )
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
            pairs.append(f'{key}="{escaped}"')
        return "ENV " + " ".join(pairs)
    if kind == pb.ImageStep.WORKDIR:
        return f"WORKDIR {_word(spec, index, step.dest)}"
    if kind in (pb.ImageStep.LOCAL_FILE, pb.ImageStep.LOCAL_DIR, pb.ImageStep.PYTHON_SOURCE):
        if not step.blob:
            raise step_failed(spec, index, "the step carries no content")
        source = f"_blobs/{step.blob}"
        if source not in files:
            try:
                files[source] = bytes(fetch_blob(step.blob))
            except Exception as err:
                raise step_failed(spec, index, f"its content (blob {step.blob}) is missing: {err}")
        if kind == pb.ImageStep.LOCAL_FILE:
            return _copy(source, _word(spec, index, step.dest))
        # A tar: ADD unpacks it into the directory.
        dest = PYTHON_SOURCE_DIR if kind == pb.ImageStep.PYTHON_SOURCE else step.dest
        return _add(source, _word(spec, index, dest).rstrip("/") + "/")
    raise step_failed(spec, index, f"the docker builder does not know steps of kind {kind}")


def _run(argv: list[str]) -> str:
    # The exec form: arguments reach the program as they are, line breaks included.
    return "RUN " + json.dumps(argv)


def _copy(source: str, dest: str) -> str:
    return "COPY " + json.dumps([source, dest])


def _add(source: str, dest: str) -> str:
    return "ADD " + json.dumps([source, dest])


def _word(spec: pb.ImageSpec, index: int, path: str) -> str:
    """A path as a Dockerfile word: the engine expands ``$`` and drops quotes unless escaped."""
    if "\n" in path:
        raise step_failed(spec, index, "a path with a line break cannot go in a Dockerfile")
    return re.sub(r"([\\$\"'])", r"\\\1", path)


def runtime_tar() -> bytes:
    """The running remotecell package, as a tar with one top-level ``remotecell/``."""
    package_dir = Path(remotecell.__file__).parent
    return deterministic_tar(package_dir, "remotecell", ("__pycache__", "*.pyc", "node_modules"))


class DockerBuilder(_docker.EngineClient, ImageBuilder):
    """Builds images with a Docker engine (``DOCKER_HOST``, or the default socket).

    Args:
        base_image: the base of ``debian_slim`` images: an image with Python and its venv
            module, present on the engine (``scripts/docker_setup.sh`` builds the default).
        ca_bundle: a CA bundle pip should trust during builds; None: the one this process
            is told to use (``PIP_CERT``, ``SSL_CERT_FILE``, ...), if any; "": none.
        pip_env: pip settings for builds; None: this process's ``PIP_INDEX_URL``,
            ``PIP_EXTRA_INDEX_URL``, ``PIP_TRUSTED_HOST`` and ``PIP_DEFAULT_TIMEOUT``.
    """

    name = "docker"

    def __init__(
        self,
        base_image: str = DEFAULT_BASE_IMAGE,
        *,
        ca_bundle: str | None = None,
        pip_env: Mapping[str, str] | None = None,
    ) -> None:
        self.base_image = base_image
        self.ca_bundle = _docker.ca_bundle(ca_bundle)
        if pip_env is None:
            pip_env = {
                name: os.environ[name]
                for name in PIP_VARIABLES
                if os.environ.get(name) and "file:" not in os.environ[name]
            }
        self.pip_env = dict(pip_env)
        self._requirements: dict[str, list[str]] = {}  # by Python version
        self._package: bytes | None = None

    # -- the engine ----------------------------------------------------------------

    def _build_args(self) -> dict[str, str]:
        args = {
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_ROOT_USER_ACTION": "ignore",
            **self.pip_env,
        }
        if self.ca_bundle:
            args.update(_docker.ca_env(CA_BUNDLE_PATH))
        return args

    # -- ImageBuilder ----------------------------------------------------------------

    async def build(self, spec: pb.ImageSpec, fetch_blob: FetchBlob, log: BuildLog) -> BuiltImage:
        loop = asyncio.get_running_loop()

        def emit(line: str) -> None:
            loop.call_soon_threadsafe(log, line)

        started = time.perf_counter()
        try:
            built = await _docker.run_blocking(self._build, spec, fetch_blob, emit)
        except _docker.DockerUnavailable as err:
            raise ImageBuildError(f"image {spec.id[:12]} cannot be built: {err}") from None
        log(f"built image {spec.id[:12]} in {time.perf_counter() - started:.2f} s ({built.ref})")
        return built

    def exists(self, built: BuiltImage) -> bool:
        try:
            self.client().images.get(built.ref)
        except Exception:
            return False
        return True

    async def remove(self, built: BuiltImage) -> None:
        await _docker.run_blocking(self._remove_tag, built.ref)

    async def prune(self, keep: set[str]) -> list[str]:
        return await _docker.run_blocking(self._prune, keep)

    async def close(self) -> None:
        await self.close_client()

    # -- the build, in a thread --------------------------------------------------------

    def _build(
        self, spec: pb.ImageSpec, fetch_blob: FetchBlob, emit: Callable[[str], None]
    ) -> BuiltImage:
        import docker

        client = self.client()
        if self._package is None:
            self._package = runtime_tar()
        build_args = self._build_args()
        ca = Path(self.ca_bundle).read_bytes() if self.ca_bundle else None
        the_plan = plan(
            spec,
            fetch_blob,
            base_image=self.base_image,
            requirements=self._runtime_requirements,
            runtime_tar=self._package,
            build_args=sorted(build_args),
            ca_bundle=ca,
        )
        tag = image_tag(spec.id)
        progress = _Progress(spec, the_plan, emit, self.base_image)
        with tempfile.TemporaryFile() as context:
            _write_context(context, the_plan)
            context.seek(0)
            try:
                stream = client.api.build(
                    fileobj=context,
                    custom_context=True,
                    tag=tag,
                    network_mode="host",
                    buildargs=build_args,
                    nocache=spec.force_build,
                    rm=True,
                    forcerm=True,
                    decode=True,
                    timeout=None,
                )
                for chunk in stream:
                    progress.feed(chunk)
            except docker.errors.APIError as err:
                self._remove_tag(tag)
                raise progress.failed(str(err.explanation or err)) from None
            except Exception as err:
                self._remove_tag(tag)
                if _docker.is_connection_error(err):
                    raise _docker.unavailable(f"the connection dropped: {err}") from None
                raise
        if progress.error is not None:
            self._remove_tag(tag)
            raise progress.failed(progress.error)
        try:
            image = client.images.get(tag)
        except docker.errors.ImageNotFound:
            raise progress.failed("the engine reported success but made no image") from None
        config = image.attrs.get("Config") or {}
        env: dict[str, str] = {}
        for step in spec.steps:
            env.update(step.env)
        return BuiltImage(
            image_id=spec.id,
            builder=self.name,
            python=VENV_PYTHON,
            env=env,
            workdir=config.get("WorkingDir") or "",
            ref=tag,
            size_bytes=int(image.attrs.get("Size") or 0),
        )

    def _prune(self, keep: set[str]) -> list[str]:
        client = self.client()
        removed = []
        for image in client.images.list(filters={"label": IMAGE_ID_LABEL}):
            image_id = image.labels.get(IMAGE_ID_LABEL, "")
            if image_id in keep:
                continue
            for tag in image.tags:
                if tag.startswith(f"{TAG_REPOSITORY}:"):
                    self._remove_tag(tag)
            removed.append(image_id)
        # What failed or interrupted builds left (the layers of their steps that worked).
        client.images.prune(filters={"dangling": True, "label": BUILDER_LABEL})
        return removed

    def _runtime_requirements(self, python: str) -> list[str]:
        if python not in self._requirements:
            self._requirements[python] = runtime_requirements(python)
        return self._requirements[python]

    def _remove_tag(self, tag: str) -> None:
        import docker

        # The tag only: the untagged layers under it stay, because a build running at
        # this moment may be using them as its cache (the runtime's layers are shared by
        # every image on the same base); `prune` clears the dangling ones.
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.NotFound):
            self.client().images.remove(tag, force=True, noprune=True)


class _Progress:
    """Follows the engine's build stream: logs one line per step and the tools' output,
    and keeps the output of the step that runs, for the error if it fails."""

    def __init__(
        self,
        spec: pb.ImageSpec,
        the_plan: _Plan,
        emit: Callable[[str], None],
        base_image: str,
    ) -> None:
        self.spec = spec
        self.base_image = base_image
        self.plan = the_plan
        self.emit = emit
        self.owner: int | str = BASE
        self.instruction = ""
        self.output: list[str] = []
        self.error: str | None = None
        self._partial = ""
        self._announced: set[int | str] = set()

    def feed(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self._flush()
            self.error = str(chunk.get("error") or "the build failed")
            return
        text = chunk.get("stream")
        if not isinstance(text, str):
            return
        lines = (self._partial + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def _flush(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def _line(self, line: str) -> None:
        line = _ANSI.sub("", line)
        found = _DOCKER_STEP.match(line)
        if found:
            self.instruction = line[found.end() :]
            owner = self.plan.owner(int(found.group(1)), int(found.group(2)))
            if owner != self.owner:
                self.output = []
            self.owner = owner
            if owner not in self._announced:
                self._announced.add(owner)
                if isinstance(owner, int):
                    self.emit(step_progress(self.spec, owner))
                else:
                    self.emit(f"[runtime] {owner}")
            return
        if _NOISE.match(line) or not line.strip():
            return
        self.emit(line)
        if line != _CACHED:  # a tool's output, kept for the error if its step fails
            self.output.append(line)
            del self.output[:-200]

    def failed(self, reason: str) -> ImageBuildError:
        self._flush()
        code = _EXIT_CODE.search(reason)
        if code:
            reason = f"it failed with exit code {code.group(1)}"
        owner = self.owner
        output = "\n".join(self.output)
        if isinstance(owner, int):
            if self.instruction.startswith("FROM") and self.spec.base == pb.ImageSpec.DEBIAN_SLIM:
                reason += (
                    f" (the docker builder's base image is {self.base_image}: build the default "
                    "one with `scripts/docker_setup.sh`, as root, or configure another)"
                )
            return step_failed(self.spec, owner, reason, output)
        if owner == RUNTIME and self.instruction.startswith("RUN"):
            reason += (
                "; remotecell's runner does not import in this image (did a step install "
                "versions of its dependencies that it cannot use?)"
            )
        message = f"image {self.spec.id[:12]}: {owner}: {reason}"
        last = tail(output)
        return ImageBuildError(f"{message}\n{last}" if last else message)


def _write_context(fileobj: IO[bytes], the_plan: _Plan) -> None:
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        files = {"Dockerfile": the_plan.dockerfile.encode(), **the_plan.files}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
