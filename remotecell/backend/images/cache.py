"""The image cache: each image is built once, and found again by its id.

* A request for an image whose id was built (and is still there) returns it at once; with
  ``force_build`` it is built again.
* Concurrent requests for one image share one build: the first starts it, the others wait
  for it, and each sees the whole build log, from its first line.
* A failed build is not cached (the next request builds again), but its log is kept
  (``remotecell image logs ID``) until the next build of that id or ``prune``.

On disk, under ``DATA_DIR/images``: ``logs/<id>.<builder>.log`` and each builder's own
directory (``venv/``); the records are the ``images`` table of ``state.sqlite3``.

``prune`` removes: images not used for ``days`` days, failed builds and their logs, what
interrupted builds left, and what builders keep for no remaining image (venv runtimes).
Images in use by a runner are not tracked here: prune while idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from remotecell._proto import pb
from remotecell.backend.images.builder import BuildLog, BuiltImage, FetchBlob, ImageBuilder
from remotecell.backend.state.images import BUILDING, READY, ImageRecord, ImageStore
from remotecell.contract.errors import ConfigError, ImageBuildError
from remotecell.contract.images import spec_id

#: A cache hit records its use at most this often (seconds): one write per image a minute.
_TOUCH_EVERY = 60.0


def images_dir(data_dir: Path) -> Path:
    return data_dir / "images"


def default_builders(data_dir: Path, docker_base_image: str = "") -> dict[str, ImageBuilder]:
    """The builders a control plane with this data directory has: the venv builder, and
    the docker builder (it needs an engine only when it builds)."""
    from remotecell.backend.images.docker import DEFAULT_BASE_IMAGE, DockerBuilder
    from remotecell.backend.images.venv import VenvBuilder

    return {
        "venv": VenvBuilder(images_dir(data_dir) / "venv"),
        "docker": DockerBuilder(docker_base_image or DEFAULT_BASE_IMAGE),
    }


def open_cache(
    data_dir: Path, builders: Mapping[str, ImageBuilder] | None = None, docker_base_image: str = ""
) -> ImageCache:
    """The image cache of the control plane whose data directory is ``data_dir``."""
    return ImageCache(
        ImageStore(data_dir / "state.sqlite3"),
        images_dir(data_dir) / "logs",
        builders if builders is not None else default_builders(data_dir, docker_base_image),
    )


@dataclass
class _Build:
    """A build in progress, and everyone waiting for it."""

    task: asyncio.Task[BuiltImage] | None = None
    lines: list[str] = field(default_factory=list)
    listeners: list[BuildLog] = field(default_factory=list)
    file: IO[str] | None = None

    def log(self, line: str) -> None:
        self.lines.append(line)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()  # `remotecell image logs` shows a build as it runs
        for listener in list(self.listeners):
            try:
                listener(line)
            except Exception:  # a requester that went away does not fail the build
                self.listeners.remove(listener)


class ImageCache:
    """Builds images once, records them, and finds them again.

    Args:
        store: the ``images`` table.
        log_dir: where build logs are kept.
        builders: the builders by name (``"venv"``, ``"docker"``).
    """

    def __init__(
        self, store: ImageStore, log_dir: Path, builders: Mapping[str, ImageBuilder]
    ) -> None:
        self.store = store
        self.log_dir = log_dir
        self.builders = dict(builders)
        self._builds: dict[tuple[str, str], _Build] = {}
        self._touched: dict[tuple[str, str], float] = {}

    def recover(self) -> int:
        """Marks builds a previous control plane left unfinished as failed (call at start,
        in the control plane only); returns how many."""
        return self.store.interrupted()

    async def close(self) -> None:
        for build in list(self._builds.values()):
            if build.task is not None:
                build.task.cancel()
                with contextlib.suppress(BaseException):
                    await build.task
        for builder in self.builders.values():
            await builder.close()
        self.store.close()

    # -- building -----------------------------------------------------------------

    def lookup(self, image_id: str, builder: str | None = None) -> BuiltImage | None:
        """The built image, if it was built and is still there; never builds."""
        name = self._builder_name(builder)
        record = self.store.get(image_id, name)
        if record is None or record.state != READY or record.built is None:
            return None
        if not self.builders[name].exists(record.built):
            return None
        key = (image_id, name)
        now = time.time()
        if now - self._touched.get(key, 0.0) > _TOUCH_EVERY:
            self._touched[key] = now
            self.store.used(image_id, name, now)
        return record.built

    async def get(
        self,
        spec: pb.ImageSpec,
        fetch_blob: FetchBlob,
        log: BuildLog | None = None,
        *,
        builder: str | None = None,
    ) -> BuiltImage:
        """The built image for ``spec``: from the cache, from a build already running, or
        from a new build (``spec.force_build``: always a build, or the one running).

        ``log`` receives the build log line by line (all of it, also when this request
        joins a running build); nothing when the image was built before.

        Raises:
            ImageBuildError: the build failed; the message names the step.
            ConfigError: the spec's id does not match its content.
        """
        name = self._builder_name(builder)
        if not spec.id or spec.id != spec_id(spec):
            raise ConfigError(
                f"the image's id {spec.id[:12] or '(none)'} does not match its content; "
                "the notebook and the control plane may run different remotecell versions"
            )
        key = (spec.id, name)
        build = self._builds.get(key)
        if build is None:
            if not spec.force_build:
                hit = self.lookup(spec.id, name)
                if hit is not None:
                    return hit
            build = self._start(spec, fetch_blob, name)
        elif log is not None:
            for line in list(build.lines):
                log(line)
        if log is not None:
            build.listeners.append(log)
        try:
            assert build.task is not None
            return await asyncio.shield(build.task)
        finally:
            if log is not None and log in build.listeners:
                build.listeners.remove(log)

    def _start(self, spec: pb.ImageSpec, fetch_blob: FetchBlob, name: str) -> _Build:
        key = (spec.id, name)
        build = _Build()
        build.task = asyncio.create_task(self._build(spec, fetch_blob, name, build))

        def done(task: asyncio.Task[BuiltImage]) -> None:
            if self._builds.get(key) is build:
                del self._builds[key]
            if not task.cancelled():
                task.exception()  # retrieved: every waiter got it already

        build.task.add_done_callback(done)
        self._builds[key] = build
        return build

    async def _build(
        self, spec: pb.ImageSpec, fetch_blob: FetchBlob, name: str, build: _Build
    ) -> BuiltImage:
        builder = self.builders[name]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.store.building(spec.id, name)
        with self.log_path(spec.id, name).open("w") as file:
            build.file = file
            try:
                built = await builder.build(spec, fetch_blob, build.log)
            except ImageBuildError as err:
                build.log(f"image build failed: {str(err).splitlines()[0]}")
                self.store.failed(spec.id, name, str(err))
                raise
            except asyncio.CancelledError:
                build.log("image build cancelled")
                self.store.failed(spec.id, name, "cancelled")
                raise
            except Exception as err:
                error = ImageBuildError(
                    f"image {spec.id[:12]}: the {name} builder failed: {type(err).__name__}: {err}"
                )
                build.log(str(error))
                self.store.failed(spec.id, name, str(error))
                raise error from err
            finally:
                build.file = None
        self.store.ready(built)
        self._touched[(spec.id, name)] = time.time()
        return built

    # -- listing and removing ------------------------------------------------------

    def records(self) -> list[ImageRecord]:
        """Every build recorded, newest first."""
        return self.store.all()

    def log_path(self, image_id: str, builder: str) -> Path:
        return self.log_dir / f"{image_id}.{builder}.log"

    def find(self, prefix: str, among: set[str] | None = None) -> list[ImageRecord]:
        """The builds of the one image whose id starts with ``prefix`` (of the images
        ``among`` only, when given).

        Raises:
            LookupError: no image, or several, match.
        """
        prefix = prefix.strip()
        records = self.store.find(prefix) if prefix else []
        if among is not None:
            records = [r for r in records if r.id in among]
        ids = {r.id for r in records}
        if not ids:
            raise LookupError(f"no image {prefix!r}; `remotecell image ls` lists them")
        if len(ids) > 1:
            raise LookupError(
                f"{prefix!r} matches {len(ids)} images ({', '.join(sorted(i[:12] for i in ids))}); "
                "give more of the id"
            )
        return records

    def log_text(self, record: ImageRecord) -> str | None:
        try:
            return self.log_path(record.id, record.builder).read_text(errors="replace")
        except FileNotFoundError:
            return None

    async def remove(self, record: ImageRecord) -> str:
        """Deletes a build: what the builder made, its record and its log. Returns a note
        when the builder's part could not be removed."""
        note = ""
        builder = self.builders.get(record.builder)
        if record.built is not None:
            if builder is None:
                note = f"the {record.builder} builder is not configured here; its image remains"
            else:
                try:
                    await builder.remove(record.built)
                except Exception as err:  # a docker engine that is down, say: `prune` later
                    note = f"the {record.builder} builder could not remove its image ({err})"
        self.store.delete(record.id, record.builder)
        self.log_path(record.id, record.builder).unlink(missing_ok=True)
        self._touched.pop((record.id, record.builder), None)
        return note

    async def prune(self, days: float = 30.0, notes: list[str] | None = None) -> list[str]:
        """Removes images not used for ``days`` days, failed builds, and leftovers (see the
        module's docstring). Builds in progress are kept. Returns what it removed.

        With ``notes``, a builder that fails to prune (a docker engine that is down) is
        skipped, saying why in ``notes``, and the rest is pruned; without, it raises.
        """
        cutoff = time.time() - days * 86400
        removed: list[str] = []
        keep: dict[str, set[str]] = {name: set() for name in self.builders}
        for record in self.store.all():
            recent = (record.last_used or record.finished or record.created) >= cutoff
            if record.state == BUILDING or (record.state == READY and recent):
                keep.setdefault(record.builder, set()).add(record.id)
                continue
            note = await self.remove(record)
            removed.append(
                f"image {record.id[:12]} ({record.builder}, {record.state})"
                + (f": {note}" if note else "")
            )
        for name, builder in self.builders.items():
            try:
                removed.extend(await builder.prune(keep[name]))
            except Exception as err:
                if notes is None:
                    raise
                notes.append(f"the {name} builder's leftovers were kept: {err}")
        if self.log_dir.exists():
            for file in sorted(self.log_dir.glob("*.log")):
                image_id, _, rest = file.name.partition(".")
                if image_id not in keep.get(rest.removesuffix(".log"), set()):
                    file.unlink(missing_ok=True)
                    removed.append(str(file))
        return removed

    def _builder_name(self, builder: str | None) -> str:
        if builder is None:
            if len(self.builders) == 1:
                return next(iter(self.builders))
            builder = "venv"
        if builder not in self.builders:
            raise ConfigError(
                f"no {builder!r} image builder here; there are: {', '.join(self.builders) or 'none'}"
            )
        return builder
