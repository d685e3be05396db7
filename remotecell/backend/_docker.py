"""What the docker builder and the docker executor share: the engine connection, the CA
bundle, and a thread pool for the docker SDK's blocking calls.

The docker SDK (the ``docker`` extra) is imported only when a client is made.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: The variables that point pip, OpenSSL, requests and curl at a CA bundle. With none
#: configured, the first of them that names a file here is the bundle handed on.
CA_BUNDLE_VARIABLES = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
#: uv uses its own roots unless told to use the system's (which SSL_CERT_FILE then sets).
UV_NATIVE_TLS = "UV_NATIVE_TLS"

# Blocking calls that can last as long as a build or a container: not the loop's default
# pool, which has a handful of threads and is shared with everything else.
_POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="remotecell-docker")


class DockerUnavailable(RuntimeError):
    """No Docker engine answers, or the docker SDK is not installed."""


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def unavailable(reason: object) -> DockerUnavailable:
    """The error for an engine that does not answer: what happened and what to do."""
    return DockerUnavailable(
        f"no Docker engine answers at {engine_address()} ({reason}); start one "
        "(`dockerd`, or as root `scripts/docker_setup.sh` from remotecell's source, which "
        "also builds the base image), point DOCKER_HOST at a running one, or use the venv "
        "builder and the local executor, which need no Docker"
    )


def connect() -> Any:
    """A ``docker.DockerClient`` for the engine at ``DOCKER_HOST`` (or the default socket).

    Blocking (it asks the engine for its API version).

    Raises:
        DockerUnavailable: the SDK is missing or no engine answers.
    """
    try:
        import docker
    except ImportError:
        raise DockerUnavailable(
            "the docker builder and executor need the docker SDK for Python; "
            "install it with `pip install 'remotecell[docker]'`"
        ) from None
    try:
        return docker.from_env(timeout=120)
    except docker.errors.DockerException as err:
        raise unavailable(_short(err)) from None


def is_connection_error(err: BaseException) -> bool:
    """Whether ``err`` means the engine stopped answering (not that it refused a request)."""
    import requests

    return isinstance(err, requests.exceptions.ConnectionError)


def ca_bundle(configured: str | None) -> str:
    """The CA bundle to hand to builds and runners: ``configured`` ("" turns it off), or,
    when None, the first existing file named by this process's own CA variables."""
    if configured is not None:
        if configured and not Path(configured).is_file():
            raise ValueError(f"CA bundle {configured} is not a file")
        return configured
    for name in CA_BUNDLE_VARIABLES:
        value = os.environ.get(name, "")
        if value and Path(value).is_file():
            return value
    return ""


def ca_env(path: str) -> dict[str, str]:
    """Variables that make pip, requests, OpenSSL, curl and uv trust the bundle at ``path``."""
    if not path:
        return {}
    return {**{name: path for name in CA_BUNDLE_VARIABLES}, UV_NATIVE_TLS: "1"}


async def run_blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs a blocking docker SDK call in a thread of its own pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, functools.partial(fn, *args, **kwargs))


def _short(err: BaseException) -> str:
    text = str(err)
    # The SDK nests the requests error: keep its last, most specific part.
    for marker in ("Connection refused", "No such file or directory", "Permission denied"):
        if marker in text:
            return marker
    return text.splitlines()[0] if text else type(err).__name__


class EngineClient:
    """A docker client made on first use, shared by what talks to the engine (the
    docker builder and executor)."""

    _client: Any = None

    def client(self) -> Any:
        """The docker client, made on first use (blocking).

        Raises:
            DockerUnavailable: no engine answers.
        """
        if self._client is None:
            self._client = connect()
        return self._client

    async def close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await run_blocking(client.close)
