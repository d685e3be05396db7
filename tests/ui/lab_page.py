"""Driving a JupyterLab page: open a notebook, wait for its kernel, run its cells."""

from __future__ import annotations

import time
from typing import Any


def run_notebook(page: Any, url: str) -> None:
    """Opens a notebook, waits for its kernel to be connected and idle, runs every cell."""
    page.goto(url)
    path = url.split("/tree/", 1)[1].split("?", 1)[0]
    page.wait_for_function(
        """(path) => {
            const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const kernel = widget && widget.context && widget.context.path === path
                && widget.sessionContext.session && widget.sessionContext.session.kernel;
            return kernel && kernel.connectionStatus === "connected" && kernel.status === "idle";
        }""",
        arg=path,
        timeout=60_000,
    )
    # Not awaited: the command's promise settles only when the last cell has run.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def wait_kernel_idle(page: Any, timeout: float = 60) -> None:
    """Waits until the notebook's kernel has run everything it was sent."""
    time.sleep(0.5)  # the run-all reaches the kernel first
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=timeout * 1000,
    )
