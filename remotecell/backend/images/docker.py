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
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from remotecell._proto import pb
from remotecell.backend import _docker
from remotecell.backend.images._docker_progress import Progress
from remotecell.backend.images._dockerfile import (
    BUILDER_LABEL,
    CA_BUNDLE_PATH,
    IMAGE_ID_LABEL,
    VENV,
    VENV_PYTHON,
    plan,
    runtime_tar,
    write_context,
)
from remotecell.backend.images.builder import (
    BuildLog,
    BuiltImage,
    FetchBlob,
    ImageBuilder,
    runtime_requirements,
)
from remotecell.contract.errors import ImageBuildError

DEFAULT_BASE_IMAGE = "remotecell-base:bookworm"
TAG_REPOSITORY = "remotecell-image"

__all__ = [
    "BUILDER_LABEL",
    "DEFAULT_BASE_IMAGE",
    "IMAGE_ID_LABEL",
    "TAG_REPOSITORY",
    "VENV",
    "VENV_PYTHON",
    "DockerBuilder",
    "image_tag",
]

#: Settings of the host's pip handed to builds as build arguments when set (values that
#: name local files are of no use inside a build and are left out).
PIP_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")


def image_tag(image_id: str) -> str:
    return f"{TAG_REPOSITORY}:{image_id}"


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
        progress = Progress(spec, the_plan, emit, self.base_image)
        with tempfile.TemporaryFile() as context:
            write_context(context, the_plan)
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
