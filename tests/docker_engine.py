"""A real Docker engine for the docker builder and executor tests.

Tests that need one skip when it is missing, except where ``REMOTECELL_REQUIRE_ENGINES``
is set (CI, after ``scripts/docker_setup.sh``): there a missing engine fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from support import missing

from remotecell.backend import _docker
from remotecell.backend.images.builder import BuiltImage
from remotecell.backend.images.docker import DEFAULT_BASE_IMAGE, DockerBuilder
from remotecell.client.image import Image


def require_engine() -> Any:
    """A docker client for a running engine that has the default base image."""
    try:
        client = _docker.connect()
    except _docker.DockerUnavailable as err:
        missing(str(err))
    try:
        client.images.get(DEFAULT_BASE_IMAGE)
    except Exception as err:
        client.close()
        missing(
            f"the Docker engine has no base image {DEFAULT_BASE_IMAGE} ({err}); "
            "build it with scripts/docker_setup.sh"
        )
    return client


def runtime_image() -> BuiltImage:
    """The image of the plainest spec: the remotecell runtime on the base, nothing more.

    Tests hold it while they run, so the layers every image shares (the runtime's
    dependencies: a minute to install) outlive the images the tests make and remove.
    """

    async def build() -> BuiltImage:
        builder = DockerBuilder()
        try:
            spec, _ = Image.debian_slim().to_spec()
            return await builder.build(spec, lambda digest: b"", lambda line: None)
        finally:
            await builder.close()

    return asyncio.run(build())


def remove_image(client: Any, ref: str, keep_layers: bool = False) -> None:
    """Removes an image a test made; ``keep_layers``: its layers stay as build cache (for
    the next test module, or the next run)."""
    with contextlib.suppress(Exception):
        client.images.remove(ref, force=True, noprune=keep_layers)
