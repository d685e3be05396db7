"""The Dockerfile and build context the docker builder hands the engine for an image spec:
one instruction (a layer) per step, between the Python environment made on the base and
remotecell's own runtime.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import remotecell
from remotecell._proto import pb
from remotecell.backend.images.builder import FetchBlob, step_failed
from remotecell.contract.errors import ImageBuildError
from remotecell.contract.images import deterministic_tar

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


@dataclass
class Plan:
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
) -> Plan:
    """The Dockerfile and build context for ``spec``.

    Raises:
        ImageBuildError: a step cannot be written as a Dockerfile instruction.
    """
    out = Plan()
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


def write_context(fileobj: IO[bytes], the_plan: Plan) -> None:
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        files = {"Dockerfile": the_plan.dockerfile.encode(), **the_plan.files}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
