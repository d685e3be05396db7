"""``JobTable``: recent jobs with their state, GPUs, duration and cost, and a cancel button."""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets as t

from remotecell._proto import pb
from remotecell.client import Client
from remotecell.client.listing import format_jobs, state_name
from remotecell.contract.errors import RemoteCellError
from remotecell.widgets._rows import job_row
from remotecell.widgets._static import css, esm


class JobTable(anywidget.AnyWidget):  # type: ignore[misc]
    """The control plane's most recent jobs, newest first. A queued or running job has a
    cancel button; the refresh button asks the control plane again.

    Button presses reach the kernel when it is idle (Jupyter handles comm messages between
    cells), so a cancel from the table takes effect once the running cell is done.

    Example:
        >>> JobTable(client, limit=20)  # doctest: +SKIP
    """

    _esm = esm("job_table.js")
    _css = css()

    #: One row per job (see ``remotecell.widgets._rows.job_row``).
    jobs = t.List(t.Dict()).tag(sync=True)
    #: What the last button did, in words ("job-1a2b: cancelled").
    notice = t.Unicode("").tag(sync=True)
    #: The last button's failure, in words ("" when it worked).
    error = t.Unicode("").tag(sync=True)

    def __init__(self, client: Client, limit: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client = client
        self._limit = limit
        self._infos: list[pb.JobInfo] = []
        self.on_msg(self._on_message)
        self.refresh()

    def refresh(self) -> None:
        """Asks the control plane for the jobs again (raises RemoteCellError if it cannot)."""
        self._infos = list(self._client.list_jobs(self._limit))
        self.jobs = [job_row(job) for job in self._infos]

    def cancel(self, job_id: str) -> None:
        """Cancels ``job_id`` and shows the jobs as they are then."""
        reply = self._client.cancel(job_id, "cancelled from the job table")
        with self.hold_sync():
            self.notice = f"{job_id}: {state_name(reply.state)}"
            self.error = ""
            self.refresh()

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        action = content.get("action")
        try:
            if action == "refresh":
                self.refresh()
                self.error = ""
            elif action == "cancel" and isinstance(content.get("job_id"), str):
                self.cancel(content["job_id"])
        except RemoteCellError as err:
            self.error = f"could not {action}: {err}"

    def __repr__(self) -> str:
        return format_jobs(self._infos)
