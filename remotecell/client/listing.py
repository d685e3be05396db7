"""Jobs, GPUs, volumes, images and deployments as words and plain-text tables.

One wording for every front end: the CLI, the magics, the widgets and the JupyterLab
sidebar all show jobs, GPUs, volumes, images and deployments through these functions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from remotecell._proto import pb
from remotecell.contract.resources import price_per_second

__all__ = [
    "deployment_status",
    "endpoint_url",
    "format_deployments",
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


def endpoint_url(http_url: str, info: pb.DeploymentInfo) -> str:
    """A deployment's URL: the control plane's HTTP side and its path ("" when the
    control plane serves no HTTP)."""
    if not http_url:
        return ""
    return http_url.rstrip("/") + (info.path or f"/endpoints/{info.name}")


def _replica_counts(info: pb.DeploymentInfo) -> tuple[int, int, int, int]:
    """Starting, ready, busy (ready with calls in flight) and draining replicas."""
    starting = sum(r.state == "starting" for r in info.replicas)
    ready = sum(r.state == "ready" for r in info.replicas)
    busy = sum(r.state == "ready" and r.in_flight > 0 for r in info.replicas)
    draining = sum(r.state == "draining" for r in info.replicas)
    return starting, ready, busy, draining


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms" if value else "-"


def deployment_status(info: pb.DeploymentInfo) -> str:
    """One line saying how a deployment is doing: its replicas, calls and latency.

    Example: ``embed v2: 1 starting, 2 ready (1 busy) · 3 in flight, 0 queued · p50 12 ms
    · 4.2 req/s``
    """
    head = f"{info.name} v{info.version}"
    if info.stopped:
        return f"{head}: stopped"
    starting, ready, busy, draining = _replica_counts(info)
    replicas = [f"{starting} starting"] if starting else []
    replicas.append(f"{ready} ready" + (f" ({busy} busy)" if ready else ""))
    if draining:
        replicas.append(f"{draining} draining")
    return (
        f"{head}: {', '.join(replicas)} · {info.in_flight} in flight, {info.queued} queued"
        f" · p50 {_ms(info.p50_ms)} · {info.requests_per_s:.1f} req/s"
    )


def format_deployments(deployments: Sequence[pb.DeploymentInfo], http_url: str = "") -> str:
    """A plain-text table of deployments: name, version, state, replicas (ready of all),
    calls in flight and queued, p50 latency, request rate, calls and errors, and the URL
    (its path when the control plane's HTTP address is not known)."""
    if not deployments:
        return (
            "no deployments (`%%remote_deploy NAME` or `remotecell.deploy(fn, name=...)` makes one)"
        )
    rows: list[tuple[str, ...]] = [
        (
            "NAME",
            "VERSION",
            "STATE",
            "REPLICAS",
            "IN FLIGHT",
            "QUEUED",
            "P50",
            "REQ/S",
            "CALLS",
            "ERRORS",
            "URL",
        )
    ]
    for d in deployments:
        starting, ready, _, _ = _replica_counts(d)
        state = (
            "stopped" if d.stopped else ("ready" if ready else "starting" if starting else "idle")
        )
        if d.ephemeral:
            state += " (ephemeral)"
        rows.append(
            (
                d.name,
                f"v{d.version}",
                state,
                f"{ready}/{len(d.replicas)}",
                str(d.in_flight),
                str(d.queued),
                _ms(d.p50_ms),
                f"{d.requests_per_s:.1f}",
                str(d.calls),
                str(d.errors),
                endpoint_url(http_url, d) or d.path or f"/endpoints/{d.name}",
            )
        )
    return _table(rows)
