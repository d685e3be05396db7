"""A runner's copy of a volume in a store it cannot mount (``s3://``, ``memory://``).

Only the control plane reaches the store (``memory://`` lives in its process), so the
runner moves files through it, over gRPC. The copy is a directory at the mount path;
the runner keeps a *baseline*: for each file, the store's version it last pulled or
committed and the local size and mtime it had then.

``pull`` (at the start of each cell, and ``vol.reload()``) downloads each file whose
version in the store differs from the baseline, and deletes local files the store no
longer has, except where the local file changed since the baseline: an uncommitted
change of the cell's own (or a local deletion) is kept. The whole volume is listed, and
only changed files travel: eager, so a cell sees the volume as it was when it started.

``commit`` (when each cell ends, and ``vol.commit()``) uploads each file whose size or
mtime differs from the baseline (or that is new) and removes from the store the files
of the baseline that are gone locally. The control plane replaces each file atomically,
so a runner that dies mid-commit leaves every file at its last committed version (or,
for files it already sent, at the new one). Concurrent writers: per file, the last
commit wins; files that only one runner changed are all kept. Empty directories and
symlinks are not stored (a symlink is named in the commit's note).

Downloads go to a temporary file next to their target (``.remotecell-pull-*``, never
committed) and are renamed into place, so a cell never sees half a file.

Size and mtime miss a rewrite of the same size within one tick of the filesystem's clock
(a few milliseconds). So, as git does with its index, a baseline taken within
``RACY_NS`` of a file's mtime also keeps the file's content hash, and a file whose size
and mtime still match such a baseline is hashed again to tell.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from remotecell.client import Client
from remotecell.contract.errors import VolumeFileNotFoundError
from remotecell.contract.volumes import volume_path

PULL_PREFIX = ".remotecell-pull-"
#: A file modified this close to its baseline could change again with the same mtime.
RACY_NS = 100_000_000


@dataclass(frozen=True)
class _Known:
    version: str  # the store's
    size: int  # the local file's, when it matched that version
    mtime_ns: int
    digest: str = ""  # the local content's hash, where the baseline is racy (see above)


def _baseline(version: str, path: Path, st: os.stat_result) -> _Known:
    racy = time.time_ns() - st.st_mtime_ns < RACY_NS
    return _Known(version, st.st_size, st.st_mtime_ns, _digest(path) if racy else "")


def _unchanged(path: Path, st: os.stat_result, known: _Known) -> bool:
    if (st.st_size, st.st_mtime_ns) != (known.size, known.mtime_ns):
        return False
    return not known.digest or _digest(path) == known.digest


def _digest(path: Path) -> str:
    hasher = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


@dataclass
class SyncReport:
    pulled: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # local files removed by a pull
    uploaded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # store files removed by a commit
    skipped: list[str] = field(default_factory=list)  # "path: why"


class SyncedVolume:
    """One volume's copy in directory ``root``."""

    def __init__(self, client: Client, name: str, root: Path) -> None:
        self.client = client
        self.name = name
        self.root = root
        self._known: dict[str, _Known] = {}

    # -- pull -----------------------------------------------------------------------

    def pull(self) -> SyncReport:
        """Brings in the store's changes since the last pull or commit."""
        report = SyncReport()
        remote = {
            f.path: f
            for f in self.client.list_volume_files(self.name, "", recursive=True)
            if not f.is_dir
        }
        for rel, entry in sorted(remote.items()):
            known = self._known.get(rel)
            if known is not None and known.version == entry.version:
                continue
            if self._changed_here(rel, known):
                continue
            try:
                self._download(rel)
            except VolumeFileNotFoundError:
                continue  # removed since the listing
            report.pulled.append(rel)
        for rel in sorted(set(self._known) - set(remote)):
            known = self._known.pop(rel)
            if self._changed_here(rel, known):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._local(rel))
                report.deleted.append(rel)
        return report

    def _download(self, rel: str) -> None:
        target = self._local(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{PULL_PREFIX}{secrets.token_hex(6)}"
        try:
            with open(tmp, "wb") as out:
                version = self.client.read_volume_file_into(self.name, rel, out)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._known[rel] = _baseline(version, target, os.stat(target))

    # -- commit ---------------------------------------------------------------------

    def commit(self) -> SyncReport:
        """Stores the local changes since the last pull or commit."""
        report = SyncReport()
        present: set[str] = set()
        for directory, dirs, files in os.walk(self.root):
            base = Path(directory).relative_to(self.root).as_posix()
            for name in sorted(files) + sorted(
                d for d in dirs if (Path(directory) / d).is_symlink()
            ):
                if name.startswith(PULL_PREFIX):
                    continue
                rel = name if base == "." else f"{base}/{name}"
                path = Path(directory) / name
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    report.skipped.append(f"{rel}: a symlink (volumes hold files, not links)")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                present.add(rel)
                known = self._known.get(rel)
                if known is not None and _unchanged(path, st, known):
                    continue
                # The stat (and hash) from before the upload: a write during it shows at
                # the next commit.
                before = _baseline("", path, st)
                entry = self.client.upload_volume_file(self.name, rel, path)
                self._known[rel] = _Known(
                    entry.version, before.size, before.mtime_ns, before.digest
                )
                report.uploaded.append(rel)
        for rel in sorted(set(self._known) - present):
            with contextlib.suppress(VolumeFileNotFoundError):
                self.client.remove_volume_path(self.name, rel)
            del self._known[rel]
            report.removed.append(rel)
        report.uploaded.sort()
        report.skipped.sort()
        return report

    # -- helpers --------------------------------------------------------------------

    def _local(self, rel: str) -> Path:
        return self.root / volume_path(rel, self.name)

    def _changed_here(self, rel: str, known: _Known | None) -> bool:
        """Whether the local file differs from what the baseline says (a new local
        file, an edited one, or one deleted here)."""
        path = self._local(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return known is not None
        if known is None:
            return True
        return not stat.S_ISREG(st.st_mode) or not _unchanged(path, st, known)
