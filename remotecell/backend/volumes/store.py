"""The control plane's volume store: each volume is a prefix in one fsspec store.

``remotecell serve --volume-store URL`` names the store; by default it is the directory
``DATA_DIR/volumes``, and any fsspec URL works (``s3://bucket/prefix`` with s3fs
installed; ``memory://name`` keeps everything in the control plane's memory, for tests).
Volume ``weights`` lives under ``URL/weights``, its files under their own paths there, so
the store can be read with the store's own tools. Which volumes exist (and where each one
lives, should the store's URL change later) is in SQLite (``state/volumes.py``).

Every write is atomic per file: the content goes to a temporary key beside the volumes
(``URL/.tmp/``) and is moved into place once it is complete, so a writer that breaks off
(a dropped connection, a crashed runner) leaves the previous version.

Paths are checked (``remotecell.contract.volumes``): ``..`` never leaves a volume.
In a directory store, a symlink a runner made inside a volume is followed only when it
points inside that volume: reading, writing or listing through one that points out of it
is refused, and listings leave such links out.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import fsspec

from remotecell._proto import pb
from remotecell.backend.state import owned
from remotecell.backend.state.tempfile import TempFile
from remotecell.backend.state.volumes import VolumeRecord, VolumeRecords
from remotecell.backend.volumes._entries import local_entry, store_entry
from remotecell.backend.volumes._local import Escape, LocalDir, NotAFile
from remotecell.contract.errors import ConfigError
from remotecell.contract.volumes import check_name, volume_path

CHUNK = 4 * 1024 * 1024
TMP_DIR = ".tmp"


class VolumeMissing(LookupError):
    """No volume of that name; the message says how to make one."""


class FileMissing(LookupError):
    """No file at that path in the volume; the message says how to list it."""


class VolumeExists(ValueError):
    """A volume of that name exists already."""


def missing_volume(name: str) -> VolumeMissing:
    return VolumeMissing(
        f"no volume {name!r}: create it with remotecell.Volume.from_name({name!r}, "
        f"create_if_missing=True) or `remotecell volume create {name}`"
    )


@dataclass
class _Place:
    """Where one volume's files are."""

    record: VolumeRecord
    fs: Any
    root: str  # the volume's root in ``fs``'s terms
    local: LocalDir | None  # a directory on this machine: reached through checked fds

    def key(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    @property
    def tmp_dir(self) -> str:
        return f"{posixpath.dirname(self.root.rstrip('/'))}/{TMP_DIR}"


class VolumeStore:
    """Volumes and their files.

    Args:
        url: the store's root for new volumes: a directory or an fsspec URL.
        records: the table of volumes.
    """

    def __init__(self, url: str, records: VolumeRecords) -> None:
        self.url = url.rstrip("/") or url
        self.records = records
        self.shares = records.shares
        fs, root = fsspec.core.url_to_fs(self.url)
        fs.makedirs(root, exist_ok=True)
        #: Directories runners need, where no volume may be mounted (set by the server).
        self.reserved: tuple[str, ...] = ()

    # -- volumes --------------------------------------------------------------------

    def create(
        self, name: str, exist_ok: bool = False, owner: str = ""
    ) -> tuple[VolumeRecord, bool]:
        """Makes ``owner``'s volume (its root in the store and its record); returns it
        and whether it is new.

        Raises:
            ConfigError: an invalid name.
            VolumeExists: it exists and ``exist_ok`` is False.
        """
        check_name(name)
        stored = owned.stored(name, owner)
        found = self.records.get(stored)
        if found is None:
            url = f"{self.url}/{stored}"
            fs, root = fsspec.core.url_to_fs(url)
            fs.makedirs(root, exist_ok=True)
            found, created = self.records.add(stored, secrets.token_hex(8), url)
            if created:
                return found, True
        if not exist_ok:
            raise VolumeExists(
                f"volume {name!r} exists already; use it (Volume.from_name({name!r})) or "
                "delete it first (`remotecell volume delete " + name + "`)"
            )
        return found, False

    def get(self, name: str, owner: str = "") -> VolumeRecord:
        """``owner``'s volume ``name``.

        Raises:
            ConfigError: an invalid name.
            VolumeMissing: no such volume.
        """
        check_name(name)
        record = self.records.get(owned.stored(name, owner))
        if record is None:
            raise missing_volume(name)
        return record

    def all(self, owner: str = "") -> list[VolumeRecord]:
        """Every volume; with ``owner``, theirs and those shared with them."""
        return self.records.all(owner)

    def owner_for(self, user: str, name: str) -> str:
        """Whose volume ``name`` the user means (see ``owned.Shares.owner_for``)."""
        mine = self.records.get(owned.key(user, name)) is not None
        return self.shares.owner_for(owned.VOLUME, user, name, mine)

    def delete(self, name: str, owner: str = "") -> int:
        """Removes a volume and all its files, and its shares; returns how many files
        it held."""
        place = self._place(name, owner)
        files = len(self._walk(place, "")) if self._exists(place, "") else 0
        self.records.remove(place.record.name)
        if owner:
            self.shares.forget(owned.VOLUME, owner, name)
        if place.local:
            shutil.rmtree(place.root, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                place.fs.rm(place.root, recursive=True)
        return files

    def shared_dir(self, record: VolumeRecord) -> Path | None:
        """The volume's directory, when runners on this machine can mount it as it is."""
        fs, root = fsspec.core.url_to_fs(record.url)
        return Path(root) if _is_local(fs) else None

    def info(self, record: VolumeRecord) -> pb.VolumeInfo:
        return pb.VolumeInfo(
            name=owned.name_of(record.name),
            owner=owned.owner_of(record.name),
            volume_id=record.volume_id,
            created=record.created,
            url=record.url,
            shared_dir=self.shared_dir(record) is not None,
        )

    def _place(self, name: str, owner: str = "") -> _Place:
        record = self.get(name, owner)
        fs, root = fsspec.core.url_to_fs(record.url)
        root = root.rstrip("/")
        return _Place(record, fs, root, LocalDir(root) if _is_local(fs) else None)

    # -- files ----------------------------------------------------------------------

    def files(
        self, name: str, path: str = "", recursive: bool = False, owner: str = ""
    ) -> list[pb.VolumeFile]:
        """The entries of a directory (or the one file ``path`` names); with
        ``recursive``, every file below it.

        Raises:
            FileMissing: nothing at ``path``.
        """
        place = self._place(name, owner)
        rel = volume_path(path, name)
        if place.local is not None:
            local = place.local
            with self._local_errors(place, rel):
                st = local.stat(rel)
                if not stat.S_ISDIR(st.st_mode):
                    return [local_entry(rel, st)]
                entries = [local_entry(p, st) for p, st in local.entries(rel, recursive)]
            return sorted(entries, key=lambda e: e.path)
        key = place.key(rel)
        if rel:
            try:
                info = place.fs.info(key)
            except FileNotFoundError:
                raise self._missing(place, rel) from None
            if info["type"] != "directory":
                return [store_entry(place.fs, place.root, info)]
        if recursive:
            infos = place.fs.find(key, detail=True, withdirs=False).values()
        else:
            try:
                infos = place.fs.ls(key, detail=True)
            except FileNotFoundError:
                if rel:
                    raise self._missing(place, rel) from None
                infos = []  # a fresh volume on an object store has no root object
        entries = [store_entry(place.fs, place.root, info) for info in infos]
        return sorted((e for e in entries if e.path), key=lambda e: e.path)

    def read(self, name: str, path: str, owner: str = "") -> tuple[pb.VolumeFile, Iterator[bytes]]:
        """A file's entry and its content in chunks.

        Raises:
            FileMissing: no file at ``path``.
            ConfigError: ``path`` is a directory, or a symlink out of the volume.
        """
        place = self._place(name, owner)
        rel = volume_path(path, name)
        if not rel:
            raise _is_directory(name, "/")
        handle: BinaryIO
        if place.local is not None:
            with self._local_errors(place, rel):
                handle, st = place.local.open_file(rel)
            entry = local_entry(rel, st)
        else:
            try:
                info = place.fs.info(place.key(rel))
            except FileNotFoundError:
                raise self._missing(place, rel) from None
            if info["type"] == "directory":
                raise _is_directory(name, rel)
            handle = place.fs.open(place.key(rel), "rb")
            entry = store_entry(place.fs, place.root, info)

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(CHUNK):
                    yield chunk

        return entry, chunks()

    def writer(self, name: str, path: str, owner: str = "") -> FileWriter:
        """A writer that replaces ``path`` atomically when it is committed.

        Raises:
            ConfigError: ``path`` is the root or a directory, or would be written
                through a symlink out of the volume.
        """
        place = self._place(name, owner)
        rel = volume_path(path, name)
        if not rel:
            raise _is_directory(name, "/")
        if place.local is not None:
            with self._local_errors(place, rel, writing=True):
                if place.local.is_dir(rel):
                    raise IsADirectoryError(rel)
        elif place.fs.isdir(place.key(rel)):
            raise _is_directory(name, rel)
        return FileWriter(self, place, rel)

    def remove(self, name: str, path: str, recursive: bool = False, owner: str = "") -> int:
        """Removes a file (or, with ``recursive``, a directory and what it holds);
        returns how many files went.

        Raises:
            FileMissing: nothing at ``path``.
            ConfigError: ``path`` is the root, or a directory without ``recursive``.
        """
        place = self._place(name, owner)
        rel = volume_path(path, name)
        if not rel:
            raise ConfigError(
                f"cannot remove the root of volume {name!r}; remove what is in it, or delete "
                f"the volume (`remotecell volume delete {name}`)"
            )
        if place.local is not None:
            with self._local_errors(place, rel):
                try:
                    return place.local.remove(rel, recursive)
                except IsADirectoryError:
                    raise _needs_recursive(name, rel) from None
        key = place.key(rel)
        try:
            info = place.fs.info(key)
        except FileNotFoundError:
            raise self._missing(place, rel) from None
        if info["type"] != "directory":
            place.fs.rm(key)
            return 1
        if not recursive:
            raise _needs_recursive(name, rel)
        count = len(place.fs.find(key))
        place.fs.rm(key, recursive=True)
        return count

    # -- helpers --------------------------------------------------------------------

    def _missing(self, place: _Place, rel: str) -> FileMissing:
        name = owned.name_of(place.record.name)
        return FileMissing(
            f"no file or directory {'/' + rel!r} in volume {name!r}; "
            f"`remotecell volume ls {name}` (or .listdir('/')) lists what it holds"
        )

    def _exists(self, place: _Place, rel: str) -> bool:
        return bool(place.fs.exists(place.key(rel)))

    def _walk(self, place: _Place, rel: str) -> list[pb.VolumeFile]:
        if place.local is not None:
            return [local_entry(p, st) for p, st in place.local.entries(rel, True)]
        return [
            store_entry(place.fs, place.root, i)
            for i in place.fs.find(place.key(rel), detail=True).values()
        ]

    @contextlib.contextmanager
    def _local_errors(self, place: _Place, rel: str, writing: bool = False) -> Iterator[None]:
        """A directory store's errors as the store's own."""
        name = owned.name_of(place.record.name)
        try:
            yield
        except Escape:
            raise ConfigError(
                f"{'/' + rel!r} in volume {name!r} goes through a symlink that points out "
                "of the volume; volumes only follow links inside themselves, so use the "
                "path the link points to inside the volume"
            ) from None
        except IsADirectoryError:
            raise _is_directory(name, rel) from None
        except NotAFile:
            raise ConfigError(
                f"{'/' + rel!r} in volume {name!r} is not a regular file (a FIFO, socket or "
                "device); volumes hold files and directories"
            ) from None
        except NotADirectoryError:
            if writing:
                raise _file_in_the_way(name, rel) from None
            raise self._missing(place, rel) from None
        except FileNotFoundError:
            raise self._missing(place, rel) from None


class FileWriter:
    """Writes one file to a temporary key (``state/tempfile.py``) and moves it into
    place on ``commit``."""

    def __init__(self, store: VolumeStore, place: _Place, rel: str) -> None:
        self.store = store
        self.place = place
        self.rel = rel
        place.fs.makedirs(place.tmp_dir, exist_ok=True)
        path = f"{place.tmp_dir}/{owned.name_of(place.record.name)}.{secrets.token_hex(8)}"

        def opener() -> Any:
            if place.local is not None:
                return open(path, "wb")
            return place.fs.open(path, "wb")

        self._tmp = TempFile(path, opener, lambda: place.fs.rm(path))

    @property
    def size(self) -> int:
        return self._tmp.size

    def write(self, data: bytes) -> None:
        with self._tmp.lock:
            self._tmp.write(data)

    def commit(self) -> pb.VolumeFile:
        tmp = self._tmp
        with tmp.lock:
            place = self.place
            file = tmp.file()
            if place.local is not None:
                file.flush()
                os.fsync(file.fileno())
            file.close()
            target = place.key(self.rel)
            try:
                if place.local is not None:
                    with self.store._local_errors(place, self.rel, writing=True):
                        entry = local_entry(self.rel, place.local.replace(tmp.path, self.rel))
                else:
                    place.fs.makedirs(posixpath.dirname(target), exist_ok=True)
                    place.fs.mv(tmp.path, target)
                    entry = store_entry(place.fs, place.root, place.fs.info(target))
            except (NotADirectoryError, FileExistsError):
                tmp.drop()
                raise _file_in_the_way(owned.name_of(place.record.name), self.rel) from None
            except BaseException:
                tmp.drop()
                raise
            tmp.placed()
            return entry

    def abort(self) -> None:
        """Drops the temporary content; the previous version stays."""
        self._tmp.abort()

    async def discard(self) -> None:
        """``abort``, from a coroutine, done even if the coroutine is cancelled."""
        await self._tmp.discard()


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def _is_directory(name: str, rel: str) -> ConfigError:
    shown = rel if rel.startswith("/") else "/" + rel
    return ConfigError(
        f"{shown!r} in volume {name!r} is a directory; give the path of a file in it "
        f"(`remotecell volume ls {name} {shown}` lists them)"
    )


def _file_in_the_way(name: str, rel: str) -> ConfigError:
    return ConfigError(
        f"cannot write {'/' + rel!r} in volume {name!r}: a part of its directory is a file; "
        "remove that file or write elsewhere"
    )


def _needs_recursive(name: str, rel: str) -> ConfigError:
    return ConfigError(
        f"{'/' + rel!r} in volume {name!r} is a directory; remove it with recursive=True "
        "(`remotecell volume rm -r`) to remove what it holds too"
    )
