"""remotecell: serverless GPU compute for Jupyter, on your own hardware.

In a notebook::

    %load_ext remotecell

    %%remote
    y = double(x)      # runs on a runner; `x` and `double` travel with the cell

`import remotecell` stays cheap: the magics, the client and gRPC load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BlobCorruptError",
    "BlobNotFoundError",
    "CallArgumentsError",
    "CallTimeoutError",
    "ClosureError",
    "ConnectionError",
    "Deployment",
    "DeploymentNotFoundError",
    "EndpointUnavailableError",
    "FunctionCall",
    "Image",
    "JobNotFoundError",
    "RemoteCellError",
    "RemoteError",
    "RemoteJob",
    "Secret",
    "Volume",
    "VolumeFileNotFoundError",
    "VolumeNotFoundError",
    "__version__",
    "deploy",
    "function",
    "load_ipython_extension",
    "unload_ipython_extension",
]

if TYPE_CHECKING:
    from remotecell.client.deployment import Deployment, FunctionCall, deploy, function
    from remotecell.client.image import Image
    from remotecell.client.secret import Secret
    from remotecell.client.volume import Volume
    from remotecell.contract.errors import (
        AuthError,
        BlobCorruptError,
        BlobNotFoundError,
        CallArgumentsError,
        CallTimeoutError,
        ClosureError,
        ConnectionError,
        DeploymentNotFoundError,
        EndpointUnavailableError,
        JobNotFoundError,
        RemoteCellError,
        RemoteError,
        VolumeFileNotFoundError,
        VolumeNotFoundError,
    )
    from remotecell.kernel_magics import RemoteJob

_LAZY = {
    "AuthError": "remotecell.contract.errors",
    "CallArgumentsError": "remotecell.contract.errors",
    "CallTimeoutError": "remotecell.contract.errors",
    "DeploymentNotFoundError": "remotecell.contract.errors",
    "EndpointUnavailableError": "remotecell.contract.errors",
    "BlobCorruptError": "remotecell.contract.errors",
    "BlobNotFoundError": "remotecell.contract.errors",
    "ClosureError": "remotecell.contract.errors",
    "ConnectionError": "remotecell.contract.errors",
    "Deployment": "remotecell.client.deployment",
    "FunctionCall": "remotecell.client.deployment",
    "Image": "remotecell.client.image",
    "JobNotFoundError": "remotecell.contract.errors",
    "RemoteCellError": "remotecell.contract.errors",
    "RemoteError": "remotecell.contract.errors",
    "RemoteJob": "remotecell.kernel_magics",
    "Secret": "remotecell.client.secret",
    "Volume": "remotecell.client.volume",
    "VolumeFileNotFoundError": "remotecell.contract.errors",
    "VolumeNotFoundError": "remotecell.contract.errors",
    "deploy": "remotecell.client.deployment",
    "function": "remotecell.client.deployment",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'remotecell' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext remotecell`: registers `%%remote` and friends."""
    from remotecell.kernel_magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from remotecell.kernel_magics import unload_ipython_extension as unload

    unload(ipython)
