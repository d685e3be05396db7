"""``GPUInventory``: the control plane's GPUs, and which runner and job hold each."""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets as t

from remotecell._proto import pb
from remotecell.client import Client
from remotecell.client.listing import format_gpus
from remotecell.contract.errors import RemoteCellError
from remotecell.widgets._rows import gpu_row
from remotecell.widgets._static import css, esm


class GPUInventory(anywidget.AnyWidget):  # type: ignore[misc]
    """Each GPU of the control plane's machine: type, memory, price, and the runner and job
    holding it. Its refresh button asks the control plane again.

    Example:
        >>> GPUInventory(client)  # doctest: +SKIP
    """

    _esm = esm("inventory.js")
    _css = css()

    #: One row per GPU (see ``remotecell.widgets._rows.gpu_row``).
    gpus = t.List(t.Dict()).tag(sync=True)
    #: Why there are none, when there are none.
    note = t.Unicode("").tag(sync=True)
    #: The last refresh's failure, in words ("" when it worked).
    error = t.Unicode("").tag(sync=True)

    def __init__(self, client: Client, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client = client
        self._reply = pb.ListGPUsReply()
        self.on_msg(self._on_message)
        self.refresh()

    def refresh(self) -> None:
        """Asks the control plane for its GPUs again (raises RemoteCellError if it cannot)."""
        reply = self._client.list_gpus()
        self._reply = reply
        with self.hold_sync():
            self.gpus = [gpu_row(gpu) for gpu in reply.gpus]
            self.note = reply.note
            self.error = ""

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("action") == "refresh":
            try:
                self.refresh()
            except RemoteCellError as err:
                self.error = f"could not list the GPUs: {err}"

    def __repr__(self) -> str:
        return format_gpus(self._reply)
