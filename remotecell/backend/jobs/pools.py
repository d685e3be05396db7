"""A job's or a runner's pool, read from what the wire carries (a spec, a hello)."""

from __future__ import annotations

from remotecell._proto import pb
from remotecell.backend.jobs.admission import volumes_key
from remotecell.backend.scheduler.queue import Pool
from remotecell.contract.resources import GPURequest


def pool_of(spec: pb.JobSpec) -> Pool:
    """The pool whose runners can run a job (its GPUs are its request, not its pool)."""
    return Pool(
        spec.image,
        spec.session,
        spec.resources.cpu,
        spec.resources.memory_mb,
        volumes=volumes_key(spec.volumes),
    )


def gpu_of(resources: pb.Resources) -> GPURequest | None:
    """The GPUs a job asks for, validated as strictly as the magic's ``gpu=``.

    Raises:
        ConfigError: an unknown type or a bad count; the message says what is valid.
    """
    if not resources.gpu:
        return None
    return GPURequest.from_fields([{"type": c.type, "count": c.count} for c in resources.gpu])


def runner_pool(hello: pb.RunnerHello) -> Pool:
    """The pool a runner's hello says it serves (its GPUs as ``"H100:2"``)."""
    gpu = ", ".join(f"{c.type}:{c.count}" if c.count > 1 else c.type for c in hello.resources.gpu)
    return Pool(
        hello.image,
        hello.session,
        hello.resources.cpu,
        hello.resources.memory_mb,
        gpu,
        volumes=volumes_key(hello.volumes),
    )


def gpu_held_by(pool: Pool) -> tuple[str, int]:
    """The type and number of GPUs a runner of ``pool`` holds (``("", 0)``: none)."""
    if not pool.gpu:
        return "", 0
    gpu_type, _, count = pool.gpu.partition(":")
    return gpu_type, int(count or 1)
