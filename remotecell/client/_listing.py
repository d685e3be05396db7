"""Job states and job tables in words, for the magics and the CLI."""

from __future__ import annotations

import time

from remotecell._proto import pb

_STATES: dict[int, str] = {
    pb.QUEUED: "queued",
    pb.RUNNING: "running",
    pb.SUCCEEDED: "succeeded",
    pb.FAILED: "failed",
    pb.CANCELLED: "cancelled",
}


def state_name(state: int) -> str:
    return _STATES.get(state, "unknown")


def format_jobs(jobs: list[pb.JobInfo]) -> str:
    """A plain-text table of jobs: id, state, started, duration, first line of code."""
    rows = [("JOB", "STATE", "STARTED", "DURATION", "CODE")]
    now = time.time()
    for job in jobs:
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.started)) if job.started else "-"
        )
        duration = f"{(job.finished or now) - job.started:.1f}s" if job.started else "-"
        rows.append((job.job_id, state_name(job.state), started, duration, job.summary[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4] for r in rows
    )
