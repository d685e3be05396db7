"""Jobs and GPUs as the job table and the GPU inventory show them: JSON-ready rows."""

from __future__ import annotations

from typing import Any

from remotecell._proto import pb
from remotecell.client.listing import state_name
from remotecell.contract.resources import price_per_second

__all__ = ["gpu_row", "job_row"]


def job_row(job: pb.JobInfo) -> dict[str, Any]:
    """One job: times are unix seconds (0: not yet); ``price_per_second`` is None where
    nothing prices its GPUs, and the front end works duration and cost out live from it."""
    state = state_name(job.state)
    return {
        "job_id": job.job_id,
        "state": state,
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "runner_id": job.runner_id,
        "gpu_type": job.gpu_type,
        "gpu_count": job.gpu_count,
        "price_per_second": price_per_second(
            job.gpu_type,
            job.gpu_count,
            job.price_per_second if job.HasField("price_per_second") else None,
        ),
        "summary": job.summary,
        "message": job.message,
        "cancellable": state in ("queued", "running"),
    }


def gpu_row(gpu: pb.GPUInfo) -> dict[str, Any]:
    """One GPU: ``state`` is "free" (no runner), "idle" (a runner, no job) or "busy"."""
    configured = gpu.price_per_second if gpu.HasField("price_per_second") else None
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "type": gpu.type,
        "memory_total": gpu.memory_total,
        "runner_id": gpu.runner_id,
        "job_id": gpu.job_id,
        "state": "busy" if gpu.job_id else ("idle" if gpu.runner_id else "free"),
        "price_per_second": price_per_second(gpu.type, 1, configured),
    }
