"""remotecell's notebook widgets (anywidget): a job's live monitor, the GPU inventory and the
job table. Their front ends are TypeScript in ``js/``, built into ``static/`` with the package.

    from remotecell.widgets import GPUInventory
    GPUInventory(client)      # what %remote_gpus shows

Each shows plain text where the front end has no widgets (``remotecell run``, a terminal).
The widget classes load ipywidgets on first use, so the magics load without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["GPUInventory", "JobMonitor", "JobTable"]

if TYPE_CHECKING:
    from remotecell.widgets._inventory import GPUInventory
    from remotecell.widgets._job_table import JobTable
    from remotecell.widgets._monitor import JobMonitor

_LAZY = {
    "GPUInventory": "remotecell.widgets._inventory",
    "JobMonitor": "remotecell.widgets._monitor",
    "JobTable": "remotecell.widgets._job_table",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'remotecell.widgets' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
