"""What a job needs before it may be queued, and what its runner needs to start: its
volumes checked and resolved, its image built or found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from remotecell._proto import pb
from remotecell.backend.executors.base import Executor
from remotecell.backend.images.builder import BuiltImage
from remotecell.backend.scheduler.queue import Pool
from remotecell.backend.volumes.mounts import LaunchVolume
from remotecell.backend.volumes.store import VolumeMissing, VolumeStore
from remotecell.contract.errors import ConfigError, ImageBuildError
from remotecell.contract.volumes import Mount, check_mounts

if TYPE_CHECKING:
    from remotecell.backend.images.cache import ImageCache


def check_volumes(
    spec: pb.JobSpec,
    volume_store: VolumeStore | None,
    executor: Executor,
    pools: Iterable[Pool],
    owner: str = "",
) -> None:
    """Checks the mounts of ``owner``'s job before it is queued, and names each volume's
    id in them (a runner's mounts are fixed when it starts, so they are part of its
    pool). A volume name means the owner's volume, or one shared with them.

    Raises:
        ConfigError: a bad or colliding mount path, a volume that does not exist, an
            executor that cannot mount here, or a session whose runner (one of ``pools``)
            has other volumes.
    """
    mounts: list[Mount] = []
    if spec.volumes:
        if volume_store is None:
            raise ConfigError(
                "this control plane has no volume store; run the cell without volumes="
            )
        problem = executor.mount_problem()
        if problem:
            raise ConfigError(problem)
        for mount in check_mounts(map(Mount.from_proto, spec.volumes), volume_store.reserved):
            problem = executor.mount_path_problem(mount.path)
            if problem:
                raise ConfigError(problem)
            try:
                record = volume_store.get(mount.name, _whose(volume_store, owner, mount.name))
            except VolumeMissing as err:
                raise ConfigError(str(err)) from None
            mounts.append(replace(mount, volume_id=record.volume_id))
        del spec.volumes[:]
        spec.volumes.extend(m.to_proto() for m in mounts)
    if spec.session:
        wanted = tuple(mounts)  # by path, as check_mounts sorted them
        for pool in pools:
            same = pool.session == spec.session and pool.image == spec.image and pool.owner == owner
            if same and pool.volumes != wanted:
                have = ", ".join(f"{m.path}={m.name}" for m in pool.volumes) or "none"
                raise ConfigError(
                    f"session {spec.session!r} runs with volumes {have}: a session's runner "
                    "keeps the volumes it started with; give its cells the same volumes=, "
                    "or use another session name"
                )


def launch_volumes(pool: Pool, volume_store: VolumeStore | None) -> tuple[LaunchVolume, ...]:
    """The volumes a runner of ``pool`` mounts, as its executor needs them.

    Raises:
        ConfigError: a volume is gone, or was made anew since the job was submitted.
    """
    if not pool.volumes:
        return ()
    if volume_store is None:
        raise ConfigError("this control plane has no volume store")
    out = []
    for mount in pool.volumes:
        try:
            record = volume_store.get(mount.name, _whose(volume_store, pool.owner, mount.name))
        except VolumeMissing as err:
            raise ConfigError(str(err)) from None
        if record.volume_id != mount.volume_id:
            raise ConfigError(
                f"volume {mount.name!r} was deleted and made again since the cell was "
                "submitted; run the cell again"
            )
        shared = volume_store.shared_dir(record)
        out.append(LaunchVolume(mount, str(shared) if shared else ""))
    return tuple(out)


def _whose(volume_store: VolumeStore, user: str, name: str) -> str:
    """The owner of the volume ``user`` means by ``name`` ('' outside users)."""
    return volume_store.owner_for(user, name) if user else ""


def name_image(spec: pb.JobSpec, default: pb.ImageSpec | None) -> None:
    """Names the job's image by its id: the image it gives, or the executor's default
    (``default``, where the executor needs one) for a job that gives none."""
    if not spec.image and not spec.image_spec.id and default is not None:
        spec.image_spec.CopyFrom(default)
    if spec.image_spec.id:
        spec.image = spec.image_spec.id


async def prepare_image(
    spec: pb.JobSpec,
    images: ImageCache | None,
    builder: str,
    fetch_blob: Callable[[str], bytes] | None,
    log_line: Callable[[str], None],
) -> BuiltImage:
    """Builds (or finds) the image a job names; ``log_line`` gets the build's lines,
    possibly from a worker thread.

    Raises:
        ImageBuildError: the build failed, or this control plane builds no images.
        ConfigError: the job names an image by id that was never built here.
    """
    if images is None or fetch_blob is None:
        raise ImageBuildError("this control plane builds no images")
    if spec.image_spec.id:
        return await images.get(spec.image_spec, fetch_blob, log_line, builder=builder)
    found = images.lookup(spec.image, builder)
    if found is None:
        raise ConfigError(
            f"image {spec.image[:12]} is not built on this control plane; pass the "
            "Image itself (image=img) so that it can be built"
        )
    return found
