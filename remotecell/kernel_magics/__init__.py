"""``%%remote`` and friends, for IPython and Jupyter kernels.

``%load_ext remotecell`` registers the magics and starts finding the control plane in
the background.
"""

from __future__ import annotations

from typing import Any

from remotecell.kernel_magics._job import RemoteJob

__all__ = ["RemoteJob", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    from remotecell.kernel_magics._magics import RemoteMagics

    magics = RemoteMagics(ipython)
    ipython.register_magics(magics)
    magics.start_connecting()


def unload_ipython_extension(ipython: Any) -> None:
    from remotecell.kernel_magics._magics import RemoteMagics

    magics = ipython.magics_manager.registry.get(RemoteMagics.__name__)
    if magics is not None:
        magics.close()
