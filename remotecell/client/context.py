"""Which control plane notebook-side objects (``remotecell.Volume``) talk to.

In a kernel with ``%load_ext remotecell``, the magics' connection. In a runner, the
runner's own connection, and the runner also says which volumes it mounts (so that
``vol.commit()`` in a cell commits the runner's copy). Anywhere else, a connection made
on first use the way the magics would make it (``REMOTECELL_URL``, else the embedded
control plane).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from remotecell.client._blocking import Client


class MountedVolumes(Protocol):
    """What a runner does for ``Volume.commit()`` and ``Volume.reload()`` in its cells."""

    def commit(self, name: str) -> None: ...

    def reload(self, name: str) -> None: ...


_lock = threading.Lock()
_provider: Callable[[], Client] | None = None
_own: Client | None = None
_mounted: MountedVolumes | None = None


def use(provider: Callable[[], Client] | None) -> None:
    """Makes ``provider`` the source of the connection (None: back to the default)."""
    global _provider
    _provider = provider


def client() -> Client:
    if _provider is not None:
        return _provider()
    global _own
    with _lock:
        if _own is None:
            from remotecell.client import connect

            _own = connect()
        return _own


def set_mounted(mounted: MountedVolumes | None) -> None:
    global _mounted
    _mounted = mounted


def mounted() -> MountedVolumes | None:
    """The runner's volumes, when this process is a runner."""
    return _mounted
