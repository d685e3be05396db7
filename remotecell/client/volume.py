"""``remotecell.Volume``: a named file tree that cells mount and the notebook reads.

A volume lives in the control plane's volume store (a directory under its data
directory by default; any fsspec URL with ``remotecell serve --volume-store``). Cells
mount it at a path of their choosing::

    weights = remotecell.Volume.from_name("weights", create_if_missing=True)

    %%remote volumes={"/models": weights}
    download_if_missing("/models/llama")

and a later cell, on any runner, finds the files there. From the notebook, ``listdir``,
``read_file``, ``put_file`` and ``remove`` work on the store directly.

What a runner sees depends on the store. A directory store is mounted as it is: every
runner and the store share one directory, and writes are visible everywhere at once
(``commit`` and ``reload`` have nothing to do). Any other store (``s3://``,
``memory://``) is copied: a runner pulls the volume when each cell starts, commits what
the cell changed when it ends, and ``commit()`` / ``reload()`` in a cell do the same
mid-cell. A commit replaces each changed file atomically; when two runners commit the
same file, the later commit wins (per file: the other files each committed stay).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from remotecell._proto import pb
from remotecell.client import context
from remotecell.contract.errors import ConfigError
from remotecell.contract.volumes import check_name, volume_path

__all__ = ["Volume", "VolumeEntry"]


@dataclass(frozen=True)
class VolumeEntry:
    """A file or directory in a volume.

    Attributes:
        path: relative to the volume's root, "/"-separated (``"llama/config.json"``).
        is_dir: a directory.
        size: bytes (0 for a directory).
        mtime: last modified, unix seconds (0 where the store does not say).
    """

    path: str
    is_dir: bool
    size: int
    mtime: float

    @classmethod
    def _from_pb(cls, entry: pb.VolumeFile) -> VolumeEntry:
        return cls(entry.path, entry.is_dir, entry.size, entry.mtime)


class Volume:
    """A named volume in the control plane's volume store.

    Get one with :meth:`from_name`; mount it in a cell with
    ``%%remote volumes={"/models": vol}``. A ``Volume`` travels into cells that use it
    (``vol.commit()`` in a cell), by name.

    Example:
        >>> vol = Volume.from_name("weights", create_if_missing=True)  # doctest: +SKIP
        >>> vol.put_file("config.json", "/llama/config.json")            # doctest: +SKIP
        >>> [e.path for e in vol.listdir("/llama")]                       # doctest: +SKIP
        ['llama/config.json']
    """

    def __init__(self, name: str, *, _info: pb.VolumeInfo | None = None) -> None:
        self._name = check_name(name)
        self._info = _info

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"Volume({self._name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Volume) and other._name == self._name

    def __hash__(self) -> int:
        return hash(("Volume", self._name))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Volume, (self._name,))

    # -- volumes ----------------------------------------------------------------

    @classmethod
    def from_name(cls, name: str, create_if_missing: bool = False) -> Volume:
        """The volume called ``name``.

        Args:
            name: 1-64 letters, digits, ``_``, ``.`` or ``-``.
            create_if_missing: make it (empty) when it does not exist.

        Raises:
            VolumeNotFoundError: it does not exist and ``create_if_missing`` is False.
            ConfigError: ``name`` is not a valid volume name.

        Example:
            >>> weights = Volume.from_name("weights", create_if_missing=True)  # doctest: +SKIP
        """
        check_name(name)
        client = context.client()
        if create_if_missing:
            info = client.create_volume(name, exist_ok=True)
        else:
            info = client.get_volume(name)
        return cls(name, _info=info)

    @staticmethod
    def names() -> list[str]:
        """The names of all volumes, sorted."""
        return [v.name for v in context.client().list_volumes()]

    @staticmethod
    def delete(name: str) -> None:
        """Deletes a volume and every file in it.

        Raises:
            VolumeNotFoundError: no such volume.
            RemoteCellError: a queued or running cell mounts it.

        Example:
            >>> Volume.delete("scratch")  # doctest: +SKIP
        """
        context.client().delete_volume(check_name(name))

    # -- files ----------------------------------------------------------------------

    def listdir(self, path: str = "/", recursive: bool = False) -> list[VolumeEntry]:
        """The files and directories in directory ``path`` (the root by default); with
        ``recursive``, every file below it.

        Raises:
            VolumeFileNotFoundError: nothing at ``path``.

        Example:
            >>> [e.path for e in weights.listdir("/")]  # doctest: +SKIP
            ['llama']
        """
        rel = volume_path(path, self._name)
        files = context.client().list_volume_files(self._name, rel, recursive)
        return [VolumeEntry._from_pb(f) for f in files]

    def read_file(self, path: str) -> bytes:
        """A file's content.

        Raises:
            VolumeFileNotFoundError: no file at ``path``.
            ConfigError: ``path`` is a directory, or leaves the volume.

        Example:
            >>> weights.read_file("/llama/config.json")[:1]  # doctest: +SKIP
            b'{'
        """
        rel = volume_path(path, self._name)
        _, chunks = context.client().read_volume_file(self._name, rel)
        return b"".join(chunks)

    def get_file(self, path: str, local: str | os.PathLike[str] | IO[bytes]) -> None:
        """Writes a file's content to a local path (or a binary file object), in chunks.

        Example:
            >>> weights.get_file("/llama/config.json", "config.json")  # doctest: +SKIP
        """
        rel = volume_path(path, self._name)
        client = context.client()
        if isinstance(local, (str, os.PathLike)):
            target = Path(local)
            tmp = target.with_name(f".{target.name}.remotecell-part")
            try:
                with open(tmp, "wb") as out:
                    client.read_volume_file_into(self._name, rel, out)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            client.read_volume_file_into(self._name, rel, local)

    def put_file(self, local: str | os.PathLike[str] | IO[bytes] | bytes, path: str) -> None:
        """Stores a local file (a path, a binary file object, or bytes) at ``path``,
        replacing what was there atomically.

        Raises:
            ConfigError: ``path`` is the root or a directory, or leaves the volume.

        Example:
            >>> weights.put_file("config.json", "/llama/config.json")  # doctest: +SKIP
        """
        rel = volume_path(path, self._name)
        if not rel:
            raise ConfigError(f"give put_file a file path in volume {self._name!r}, not its root")
        client = context.client()
        if isinstance(local, (bytes, bytearray, memoryview)):
            import io

            data = memoryview(local).cast("B")
            client.write_volume_file(self._name, rel, io.BytesIO(data), len(data))
        elif isinstance(local, (str, os.PathLike)):
            client.upload_volume_file(self._name, rel, local)
        else:
            start = local.tell()
            size = local.seek(0, os.SEEK_END) - start
            local.seek(start)
            client.write_volume_file(self._name, rel, local, size)

    def remove(self, path: str, recursive: bool = False) -> None:
        """Removes a file, or a directory and all it holds (``recursive=True``).

        Raises:
            VolumeFileNotFoundError: nothing at ``path``.
            ConfigError: a directory without ``recursive``, or the root.
        """
        rel = volume_path(path, self._name)
        context.client().remove_volume_path(self._name, rel, recursive)

    # -- in a cell --------------------------------------------------------------

    def commit(self) -> None:
        """In a cell: stores what the cell changed in this volume's copy now, rather
        than when the cell ends (a volume in a directory store needs no commit).
        Elsewhere: nothing to do, ``put_file`` and ``remove`` take effect at once.

        Raises:
            ConfigError: in a cell that does not mount this volume.
        """
        mounted = context.mounted()
        if mounted is not None:
            mounted.commit(self._name)

    def reload(self) -> None:
        """In a cell: brings in what other runners committed since this cell started
        (files the cell changed and did not commit yet keep the cell's version).
        Elsewhere: nothing to do.

        Raises:
            ConfigError: in a cell that does not mount this volume.
        """
        mounted = context.mounted()
        if mounted is not None:
            mounted.reload(self._name)
