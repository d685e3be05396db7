"""`RemoteJob`: the handle ``%%remote detach=True`` returns."""

from __future__ import annotations

from typing import Any

from remotecell._proto import pb
from remotecell.client import Client
from remotecell.client.listing import state_name
from remotecell.client.metrics import MetricsSummary
from remotecell.kernel_magics._execution import JobFollower


class RemoteJob:
    """A job running on its own; its output and results wait on the control plane.

    Example:
        >>> job = get_ipython().run_cell_magic("remote", "detach=True", "y = 2 * 21")  # doctest: +SKIP
        >>> job.status()                                                              # doctest: +SKIP
        'running'
        >>> job.result()   # shows the output, assigns `y` in the notebook          # doctest: +SKIP
    """

    def __init__(self, job_id: str, client: Client, user_ns: dict[str, Any] | None = None) -> None:
        self.id = job_id
        self._client = client
        self._user_ns = user_ns
        #: The job's telemetry as :meth:`result` saw it (empty until then).
        self.metrics = MetricsSummary()

    def info(self) -> pb.JobInfo:
        return self._client.get_job(self.id)

    def status(self) -> str:
        """``"queued"``, ``"running"``, ``"succeeded"``, ``"failed"`` or ``"cancelled"``."""
        return state_name(self.info().state)

    def done(self) -> bool:
        return self.info().state in (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)

    def cancel(self) -> str:
        reply = self._client.cancel(self.id, "cancelled from the notebook")
        return state_name(reply.state)

    def result(self) -> Any:
        """Waits for the job, showing its output; assigns its pulled names in the notebook
        and returns the cell's value (raises RemoteError if it failed)."""
        follower = JobFollower(self._client, self._user_ns)
        follower.job_id = self.id
        self.metrics = follower.metrics
        return follower.follow(self._client.attach(self.id))

    wait = result

    def __repr__(self) -> str:
        try:
            status = self.status()
        except Exception:
            status = "unknown"
        return f"<RemoteJob {self.id} {status}>"
