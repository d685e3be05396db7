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


def format_gpus(reply: pb.ListGPUsReply) -> str:
    """A plain-text table of a control plane's GPUs: which are busy, and with which job."""
    if not reply.gpus:
        return f"no GPUs: {reply.note}" if reply.note else "no GPUs"
    rows = [("GPU", "TYPE", "MEMORY", "NAME", "RUNNER", "JOB")]
    for gpu in reply.gpus:
        rows.append(
            (
                str(gpu.index),
                gpu.type,
                f"{gpu.memory_total / 2**30:.0f} GiB",
                gpu.name,
                gpu.runner_id or "free",
                gpu.job_id or ("idle" if gpu.runner_id else "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
