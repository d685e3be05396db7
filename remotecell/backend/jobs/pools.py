"""A job's or a runner's pool, read from what the wire carries (a spec, a hello)."""

from __future__ import annotations

from collections.abc import Iterable

from remotecell._proto import pb
from remotecell.backend.scheduler.queue import Pool
from remotecell.contract.resources import GPUChoice
from remotecell.contract.volumes import Mount


def pool_of(spec: pb.JobSpec, owner: str = "") -> Pool:
    """The pool whose runners can run a job of ``owner`` (its GPUs are its request, not
    its pool)."""
    return Pool(
        spec.image,
        spec.session,
        spec.resources.cpu,
        spec.resources.memory_mb,
        volumes=mounts_of(spec.volumes),
        owner=owner,
    )


def runner_pool(hello: pb.RunnerHello, owner: str = "") -> Pool:
    """The pool a runner's hello says it serves, for ``owner`` (whom its credential
    names: a runner does not say whom it serves)."""
    held = hello.resources.gpu  # one type, as its launch gave it: a runner holds no fallbacks
    return Pool(
        hello.image,
        hello.session,
        hello.resources.cpu,
        hello.resources.memory_mb,
        GPUChoice.from_proto(held[0]) if held else None,
        volumes=mounts_of(hello.volumes),
        owner=owner,
    )


def mounts_of(mounts: Iterable[pb.VolumeMount]) -> tuple[Mount, ...]:
    """Mounts as a pool names them: by path."""
    return tuple(sorted(Mount.from_proto(m) for m in mounts))
