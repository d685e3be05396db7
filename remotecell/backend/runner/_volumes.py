"""The runner's volumes: mounted when it starts, synced around each cell.

The executor says what to mount in the runner's launch contract (``launch``; see
``remotecell.backend.volumes.mounts``). A local runner mounts them itself, in a mount
namespace of its own, before it connects; a container has them mounted already. A copy
of a volume in a remote store is pulled before each cell and committed when the cell
ends, before its ``finished`` event: a cell that starts after this one ended (on any
runner) sees what it wrote. ``vol.commit()`` and ``vol.reload()`` in a cell do the same
for one volume, mid-cell.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from remotecell._proto import pb
from remotecell.backend.volumes import mounts as volume_mounts
from remotecell.backend.volumes.sync import SyncedVolume, SyncReport
from remotecell.client import Client, context
from remotecell.contract.errors import ConfigError
from remotecell.contract.events import Body

Emit = Callable[[Body], None]


class RunnerVolumes:
    def __init__(self, mounts: list[volume_mounts.RunnerMount]) -> None:
        self.mounts = mounts
        self._synced: dict[str, SyncedVolume] = {}

    def mount(self) -> None:
        """Bind-mounts the volumes the executor left to the runner, in a private mount
        namespace (before anything else: a user namespace needs a single thread).

        Raises:
            OSError: they cannot be mounted; the message says what to do.
        """
        to_bind = [m for m in self.mounts if m.source]
        if not to_bind:
            return
        from remotecell.backend.volumes import namespace

        namespace.enter_private_namespace()
        for m in to_bind:
            namespace.bind(m.source, m.mount.path)

    def hello(self) -> list[pb.VolumeMount]:
        return [m.mount.to_proto() for m in self.mounts]

    def connect(self, client: Client) -> None:
        """Syncs copies through ``client``; cells' ``remotecell.Volume`` use it too."""
        self._synced = {
            m.mount.name: SyncedVolume(client, m.mount.name, Path(m.mount.path))
            for m in self.mounts
            if m.sync
        }
        context.use(lambda: client)
        context.set_mounted(self)

    # -- around a task ---------------------------------------------------------------

    def run_task(self, emit: Emit, run: Callable[[Emit], pb.Finished]) -> pb.Finished:
        """Runs a task (``run(emit)``) between a pull and a commit of the copies; returns
        how it ended (failed, where a copy could not be pulled or committed)."""
        if not self._synced:
            return run(emit)
        for volume in self._synced.values():
            try:
                volume.pull()
            except Exception as err:
                message = (
                    f"volume {volume.name!r} could not be brought in before the cell: "
                    f"{type(err).__name__}: {err}"
                )
                emit(pb.Error(kind=pb.Error.SETUP, type_name="VolumeError", message=message))
                return pb.Finished(state=pb.FAILED, message=message)
        return self._commit_all(emit, run(emit))

    def _commit_all(self, emit: Emit, finished: pb.Finished) -> pb.Finished:
        """Commits every copy before the task's ``finished`` event; a failure fails the
        job (its files were not stored)."""
        for volume in self._synced.values():
            try:
                self._note(emit, volume.name, volume.commit())
            except Exception as err:
                message = (
                    f"the cell's changes to volume {volume.name!r} could not be committed: "
                    f"{type(err).__name__}: {err}"
                )
                emit(pb.Error(kind=pb.Error.SETUP, type_name="VolumeError", message=message))
                return pb.Finished(state=pb.FAILED, message=message)
        return finished

    @staticmethod
    def _note(emit: Emit, name: str, report: SyncReport) -> None:
        if report.skipped:
            text = "".join(f"not committed to volume {name!r}: {s}\n" for s in report.skipped)
            emit(pb.Stream(name=pb.Stream.STDERR, text=text))

    # -- vol.commit() / vol.reload() in a cell ------------------------------------------

    def _mounted(self, name: str) -> SyncedVolume | None:
        if not any(m.mount.name == name for m in self.mounts):
            raise ConfigError(
                f"volume {name!r} is not mounted in this cell; mount it with "
                f'%%remote volumes={{"/path": vol}} to commit or reload it'
            )
        return self._synced.get(name)  # None: the store's own directory, always current

    def commit(self, name: str) -> None:
        volume = self._mounted(name)
        if volume is not None:
            report = volume.commit()
            for skipped in report.skipped:
                print(f"not committed to volume {name!r}: {skipped}", flush=True)

    def reload(self, name: str) -> None:
        volume = self._mounted(name)
        if volume is not None:
            volume.pull()
