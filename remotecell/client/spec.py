"""A job's spec from what the user wrote: the one builder behind ``%%remote``,
``%%remote_deploy`` and ``remotecell.deploy``/``remotecell.function``.

``secrets_option``, ``volumes_option`` and ``env_option`` check the ``secrets=``,
``volumes=`` and ``env=`` values (``gpu=`` is ``contract.resources.parse_gpu``), each
failing with one sentence that names the option as the caller wrote it (``what``:
``"%%remote option secrets=[hf]"``, ``"deploy(secrets=...)"``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

from remotecell._proto import pb
from remotecell.client.image import Image
from remotecell.client.secret import Secret
from remotecell.client.volume import Volume
from remotecell.contract.errors import ConfigError
from remotecell.contract.jobs import env_problem
from remotecell.contract.resources import GPURequest
from remotecell.contract.values import Packed
from remotecell.contract.volumes import Mount, check_mounts


def origin() -> str:
    """Who submits, for listings: ``kernel PID@HOST``."""
    return f"kernel {os.getpid()}@{socket.gethostname()}"


def secrets_option(value: Any, what: str) -> list[Secret]:
    """``secrets=``: a list (or tuple) of ``Secret``; a lone ``Secret`` is taken as one.

    Raises:
        ConfigError: another value (a string held is never shown: it may be a secret).
    """
    if isinstance(value, Secret):
        return [value]
    if isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, str):
                raise ConfigError(  # not shown: the string might be a secret's value
                    f"bad value for {what}: it holds a string; "
                    'name a stored secret with remotecell.Secret.from_name("NAME")'
                )
            if not isinstance(item, Secret):
                break
        else:
            return list(dict.fromkeys(value))
    raise ConfigError(
        f"bad value for {what} (a {type(value).__name__}): expected "
        'a list of remotecell.Secret, for example secrets=[remotecell.Secret.from_name("hf")]'
    )


def volumes_option(value: Any, what: str, expected: str) -> tuple[Mount, ...]:
    """``volumes=``: a dict of mount paths to ``Volume``, checked as the control plane
    checks it (absolute, not a system directory, no two nesting, no volume twice).

    Raises:
        ConfigError: ``bad value for WHAT ...``: another value, or mounts that clash.
    """
    if not isinstance(value, dict) or not all(isinstance(v, Volume) for v in value.values()):
        raise ConfigError(f"bad value for {what} ({_shown(value)}): expected {expected}")
    try:
        return check_mounts(Mount(path, volume.name) for path, volume in value.items())
    except ConfigError as err:
        raise ConfigError(f"bad value for {what}: {err}") from None


def env_option(value: Any, what: str) -> dict[str, str]:
    """``env=``: a dict of str to str.

    Raises:
        ConfigError: another value, or a name or value the OS cannot take.
    """
    if not isinstance(value, dict):
        raise ConfigError(f"bad value for {what}: expected a dict of str to str")
    problem = env_problem(value, what)
    if problem:
        raise ConfigError(problem)
    return dict(value)


def image_option(value: Any, what: str) -> Image | None:
    if value is None or isinstance(value, Image):
        return value
    raise ConfigError(
        f"bad value for {what} (a {type(value).__name__}): expected a remotecell.Image"
    )


def _shown(value: Any) -> str:
    import reprlib

    try:
        return reprlib.repr(value)
    except ValueError:
        return f"<{type(value).__name__}>"


def build_spec(
    code: str,
    closure: Packed,
    *,
    image: Image | None = None,
    force_build: bool = False,
    gpu: GPURequest | None = None,
    cpu: float = 0.0,
    memory: int = 0,
    secrets: Iterable[Secret] = (),
    volumes: Iterable[Mount] = (),
    env: dict[str, str] | None = None,
    timeout: float = 0.0,
    retries: int = 0,
    session: str = "",
    pull: Iterable[str] = (),
    process_settings: str = "",
) -> tuple[pb.JobSpec, dict[str, Any]]:
    """A job's spec from checked options, and the blobs to upload before it is sent
    (the closure's and the image's local files).

    Example:
        >>> spec, blobs = build_spec("y = x + 1", values.pack({"x": 1}))  # doctest: +SKIP
    """
    blobs: dict[str, Any] = dict(closure.blobs)
    spec = pb.JobSpec(
        code=code,
        closure=closure.values,
        pull=list(pull),
        timeout_s=timeout,
        retries=retries,
        session=session,
        env=env or {},
        resources=pb.Resources(
            cpu=cpu,
            memory_mb=memory,
            gpu=gpu.to_proto() if gpu else [],
        ),
        origin=origin(),
        secrets=[secret.to_proto() for secret in secrets],
        volumes=[mount.to_proto() for mount in volumes],
        process_settings=process_settings,
    )
    if image is not None:
        image_spec, image_blobs = image.to_spec(force_build=force_build)
        blobs.update(image_blobs)
        spec.image = image_spec.id
        spec.image_spec.CopyFrom(image_spec)
    return spec, blobs
