"""Talking to a remotecell control plane.

One client with two faces at parity: ``AsyncClient`` (coroutines, on the caller's event
loop) and ``Client`` (blocking). Public modules beside them: ``transport`` (channels and
stubs, shared with the runner), ``listing`` (jobs, GPUs and volumes as text, for every
front end), ``context`` (which control plane ``remotecell.Volume`` talks to), ``config``.
"""

from __future__ import annotations

from remotecell.client._async import AsyncClient
from remotecell.client._blocking import Client, EventStream
from remotecell.client.config import Endpoint, data_dir, from_environment, tls_pins
from remotecell.contract.errors import (
    AuthError,
    CellSyntaxError,
    ClosureError,
    ConfigError,
    ConnectionError,
    ImageBuildError,
    JobNotFoundError,
    RemoteCellError,
    RemoteError,
    SchedulingError,
)

__all__ = [
    "AsyncClient",
    "AuthError",
    "CellSyntaxError",
    "Client",
    "ClosureError",
    "ConfigError",
    "ConnectionError",
    "Endpoint",
    "EventStream",
    "ImageBuildError",
    "JobNotFoundError",
    "RemoteCellError",
    "RemoteError",
    "SchedulingError",
    "connect",
    "resolve_endpoint",
]


def resolve_endpoint(
    url: str = "", token: str = "", tls_fingerprint: str = "", ca_file: str = ""
) -> Endpoint:
    """The control plane to use: ``url``/``token`` if given (its certificate pinned by
    ``tls_fingerprint`` or ``ca_file``, else as the environment says), else
    ``REMOTECELL_URL``, else this user's embedded control plane (started if none runs)."""
    if url:
        if not token:
            raise ConfigError(f"a token is needed for the control plane at {url}")
        return Endpoint(url, token, **tls_pins(tls_fingerprint, ca_file))
    endpoint = from_environment()
    if endpoint is not None:
        return endpoint
    from remotecell.client._embedded import ensure_running

    return ensure_running(data_dir())


def connect(
    url: str = "",
    token: str = "",
    timeout: float = 10.0,
    tls_fingerprint: str = "",
    ca_file: str = "",
) -> Client:
    """A blocking client for the resolved control plane, checked with a health call."""
    client = Client(resolve_endpoint(url, token, tls_fingerprint, ca_file))
    try:
        client.health(timeout=timeout)
    except BaseException:
        client.close()
        raise
    return client
