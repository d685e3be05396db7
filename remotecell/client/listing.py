"""Jobs, GPUs, volumes and images as words and plain-text tables.

One wording for every front end: the CLI, the magics, the widgets and the JupyterLab
sidebar all show jobs, GPUs, volumes and images through these functions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from remotecell._proto import pb
from remotecell.contract.resources import price_per_second

__all__ = [
    "format_files",
    "format_gpus",
    "format_images",
    "format_jobs",
    "format_volumes",
    "state_name",
]

_STATES: dict[int, str] = {
    pb.QUEUED: "queued",
    pb.RUNNING: "running",
    pb.SUCCEEDED: "succeeded",
    pb.FAILED: "failed",
    pb.CANCELLED: "cancelled",
}


def state_name(state: int) -> str:
    """A job state in a word: "queued", "running", "succeeded", "failed", "cancelled"."""
    return _STATES.get(state, "unknown")


def format_jobs(jobs: list[pb.JobInfo]) -> str:
    """A plain-text table of jobs: id, state, started, duration, GPUs, estimated cost and
    the first line of code. The cost of a job that has not started, or that holds no
    GPUs, is "-"; of one whose GPUs have no price, "?"."""
    rows = [("JOB", "STATE", "STARTED", "DURATION", "GPU", "COST", "CODE")]
    now = time.time()
    for job in jobs:
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.started)) if job.started else "-"
        )
        seconds = (job.finished or now) - job.started if job.started else 0.0
        gpu = "-"
        if job.gpu_type:
            gpu = job.gpu_type if job.gpu_count <= 1 else f"{job.gpu_type}:{job.gpu_count}"
        rows.append(
            (
                job.job_id,
                state_name(job.state),
                started,
                f"{seconds:.1f}s" if job.started else "-",
                gpu,
                _cost(job, seconds),
                job.summary[:60],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:6])) + "  " + r[6] for r in rows
    )


def _cost(job: pb.JobInfo, seconds: float) -> str:
    if not job.started or not job.gpu_count:
        return "-"
    configured = job.price_per_second if job.HasField("price_per_second") else None
    price = price_per_second(job.gpu_type, job.gpu_count, configured)
    return "?" if price is None else f"${price * seconds:.4f}"


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


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def format_volumes(volumes: list[pb.VolumeInfo]) -> str:
    """Name, when it was made, and where its files are."""
    if not volumes:
        return "no volumes (`remotecell volume create NAME` makes one)"
    rows: list[tuple[str, ...]] = [("VOLUME", "OWNER", "CREATED", "MOUNTED AS", "STORE")]
    for v in volumes:
        mounted = "shared dir" if v.shared_dir else "synced copy"
        rows.append((v.name, v.owner or "-", _when(v.created), mounted, v.url))
    return _table(rows)


def format_files(files: list[pb.VolumeFile]) -> str:
    """Type, size, modified time and path of each entry."""
    if not files:
        return "(empty)"
    rows: list[tuple[str, ...]] = [("TYPE", "SIZE", "MODIFIED", "PATH")]
    for f in files:
        rows.append(
            (
                "dir" if f.is_dir else "file",
                "-" if f.is_dir else _size(f.size),
                _when(f.mtime),
                f.path + ("/" if f.is_dir else ""),
            )
        )
    return _table(rows)


def format_images(images: Sequence[pb.ImageInfo]) -> str:
    """Image builds: id, builder, state, size, when built and when last used."""
    rows: list[tuple[str, ...]] = [("IMAGE", "BUILDER", "STATE", "SIZE", "BUILT", "LAST USED")]
    for image in images:
        size = f"{image.size / 1e6:.1f} MB" if image.size else "-"
        built, used = _when(image.finished), _when(image.last_used)
        rows.append((image.image_id[:12], image.builder, image.state, size, built, used))
    return _table(rows)


def format_shares(name: str, users: list[str]) -> str:
    """Whom a secret or volume is shared with, as `remotecell secret|volume share` says."""
    return f"{name} is shared with: {', '.join(users) if users else 'no one'}"
