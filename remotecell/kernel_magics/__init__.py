"""``%%remote`` and friends, for IPython and Jupyter kernels.

``%load_ext remotecell`` registers the magics and starts finding the control plane in
the background.
"""

from __future__ import annotations

from typing import Any

from remotecell.client import context
from remotecell.kernel_magics._job import RemoteJob

__all__ = ["RemoteJob", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    from remotecell.kernel_magics._magics import RemoteMagics, show_cell_syntax_errors

    magics = RemoteMagics(ipython)
    ipython.register_magics(magics)
    show_cell_syntax_errors(ipython)
    magics.start_connecting()
    # remotecell.Volume (and the like) in this kernel use the magics' connection.
    context.use(lambda: magics.client)


def unload_ipython_extension(ipython: Any) -> None:
    from remotecell.kernel_magics._magics import RemoteMagics

    manager = ipython.magics_manager
    magics = manager.registry.pop(RemoteMagics.__name__, None)
    if magics is not None:
        magics.close()
    context.use(None)
    for kind, names in RemoteMagics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
