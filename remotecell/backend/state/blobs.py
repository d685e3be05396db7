"""The control plane's content-addressed blob store, on fsspec.

A blob lives at ``ROOT/ab/abcdef...`` under its content hash
(``remotecell.contract.values.content_hash``: xxh3-128, of leaves for large blobs). The root is a local directory by default
(shared with same-host clients and runners, see ``remotecell.contract.blobs``) or any
fsspec URL.

Garbage collection (a local directory only): a blob's modification time is when it was
last used: stored, named by a submitted job, or sent back as part of a result (the
control plane touches it then; see :meth:`BlobStore.touch`). :meth:`BlobStore.collect`
deletes blobs unused for longer than the control plane's ``--blob-ttl``, except those
that active jobs name. So a job's results can be fetched for that long after it ended;
then ``%remote_attach`` says they are gone. A remote store keeps its blobs: give it a
lifecycle rule of its own (an S3 expiry, for example).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fsspec

from remotecell._proto import pb
from remotecell.backend.state.tempfile import TempFile
from remotecell.contract import workdir
from remotecell.contract.blobs import ID_FILE, blob_relpath, verify
from remotecell.contract.values import ContentHasher, value_refs

CHUNK = 4 * 1024 * 1024
#: Default ``--blob-ttl``: a blob unused for a week is deleted.
BLOB_TTL = 7 * 86400.0
#: An upload's temporary file older than this was abandoned (its uploader died).
STALE_UPLOAD = 3600.0
#: A blob used again within this many seconds of its last mark is not marked again
#: (``BlobStore.touch``); the server uses a tenth of --blob-ttl where that is less.
TOUCH_EVERY = 600.0

log = logging.getLogger("remotecell.blobs")


def spec_refs(spec: pb.JobSpec) -> list[str]:
    """The blobs a job's spec names: its closure's, its image's local files, its working
    directory's, and a notebook run's notebook."""
    refs = value_refs(spec.closure)
    refs.extend(step.blob for step in spec.image_spec.steps if step.blob)
    refs.extend(workdir.blob_refs(spec.workdir))
    if spec.notebook.notebook_blob:
        refs.append(spec.notebook.notebook_blob)
    return refs


class BlobStore:
    def __init__(self, url: str, touch_every: float = TOUCH_EVERY) -> None:
        #: Seconds within which a blob used again is not marked again (``touch``).
        self.touch_every = touch_every
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.fs.makedirs(self.root, exist_ok=True)
        self.local_dir: Path | None = None
        self.dir_id = ""
        if "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        ):
            self.local_dir = Path(self.root)
            id_path = self.local_dir / ID_FILE
            if not id_path.exists():
                id_path.write_text(secrets.token_hex(16))
            self.dir_id = id_path.read_text().strip()

    def _path(self, digest: str) -> str:
        return f"{self.root}/{blob_relpath(digest)}"

    def has(self, digest: str) -> bool:
        return bool(self.fs.exists(self._path(digest)))

    def missing(self, hashes: Iterable[str]) -> list[str]:
        return [h for h in dict.fromkeys(hashes) if not self.has(h)]

    def put(self, digest: str, chunks: Iterable[bytes]) -> int:
        """Stores a blob from its chunks, checking the content matches the hash."""
        upload = self.upload(digest)
        try:
            for chunk in chunks:
                upload.write(chunk)
            return upload.commit()
        finally:
            upload.abort()

    def upload(self, digest: str, max_size: int | None = None) -> BlobUpload:
        """A blob's upload, written chunk by chunk to a temporary file (``commit`` checks
        its hash and moves it into place)."""
        return BlobUpload(self, digest, max_size)

    def read(self, digest: str) -> Iterator[bytes]:
        """A blob's chunks, unchecked: ``GetBlob`` streams them and its client checks the
        whole (``remotecell.contract.blobs.verify``)."""
        with self.fs.open(self._path(digest), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def get(self, digest: str) -> bytes:
        """A blob's bytes, checked against its hash.

        Raises:
            BlobCorruptError: the stored bytes do not match it.
        """
        data = b"".join(self.read(digest))
        verify(digest, data)
        return data

    # -- garbage collection (local directory stores) --------------------------

    def touch(self, hashes: Iterable[str]) -> None:
        """Marks blobs as used now (they are kept ``--blob-ttl`` from now).

        A blob marked within the last ``touch_every`` seconds is left as it is: marking
        changes its change time, and readers remember a verified blob by that
        (``client._blobs.Verified``), so a cell run again at once reads it unhashed.
        """
        if self.local_dir is None:
            return
        fresh = time.time() - self.touch_every
        for digest in dict.fromkeys(hashes):
            with contextlib.suppress(FileNotFoundError, ValueError):
                path = self.local_dir / blob_relpath(digest)
                if path.stat().st_mtime < fresh:
                    os.utime(path)

    def collect(
        self, ttl: float, keep: Iterable[str] = (), now: float | None = None
    ) -> tuple[int, int]:
        """Deletes blobs unused for ``ttl`` seconds that are not in ``keep``, and uploads
        abandoned halfway; returns how many blobs and bytes were deleted."""
        if self.local_dir is None:
            return 0, 0
        now = time.time() if now is None else now
        kept = set(keep)
        count = size = 0
        for sub in _scandir(self.local_dir):
            if sub.name == "tmp":
                for entry in _scandir(Path(sub.path)):
                    _unlink_if_older(entry, now - STALE_UPLOAD)
                continue
            if len(sub.name) != 2 or not sub.is_dir(follow_symlinks=False):
                continue
            for entry in _scandir(Path(sub.path)):
                if entry.name in kept:
                    continue
                deleted = _unlink_if_older(entry, now - ttl)
                if deleted is not None:
                    count += 1
                    size += deleted
        if count:
            log.info(
                "deleted %d blob(s), %.1f MiB, unused for %.0f s or more", count, size / 2**20, ttl
            )
        return count, size


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _unlink_if_older(entry: os.DirEntry[str], cutoff: float) -> int | None:
    """Deletes a file last modified before ``cutoff``; returns its size, None if kept.
    Stats it again just before, so a blob touched meanwhile stays."""
    try:
        if not entry.is_file(follow_symlinks=False):
            return None
        info = os.stat(entry.path, follow_symlinks=False)
        if info.st_mtime >= cutoff:
            return None
        os.unlink(entry.path)
    except FileNotFoundError:
        return None
    return info.st_size


class BlobTooLarge(ValueError):
    """An upload went past the largest blob the control plane stores."""


class BlobUpload:
    """One blob's upload: its chunks hashed as they come and written to a temporary file
    in the store's ``tmp`` directory (``state/tempfile.py``), moved into place by
    ``commit`` if the hash matches."""

    def __init__(self, store: BlobStore, digest: str, max_size: int | None) -> None:
        self.store = store
        self.digest = digest
        self.max_size = max_size
        self._hasher = ContentHasher()
        tmp_dir = f"{store.root}/tmp"
        path = f"{tmp_dir}/{digest}.{secrets.token_hex(4)}"

        def opener() -> Any:
            store.fs.makedirs(tmp_dir, exist_ok=True)
            return store.fs.open(path, "wb")

        self._tmp = TempFile(path, opener, lambda: store.fs.rm(path))

    @property
    def size(self) -> int:
        return self._tmp.size

    def write(self, data: bytes) -> None:
        with self._tmp.lock:
            if self.max_size is not None and self._tmp.size + len(data) > self.max_size:
                self._tmp.drop()
                raise BlobTooLarge(
                    f"blob {self.digest} is larger than {self.max_size} bytes, the most one "
                    "upload may store (`remotecell serve --max-blob-size`)"
                )
            self._tmp.write(data)
            self._hasher.update(data)

    def commit(self) -> int:
        """Moves the blob into place; returns its size.

        Raises:
            ValueError: the content does not match the hash (nothing is kept).
        """
        tmp = self._tmp
        with tmp.lock:
            tmp.file().close()
            if self._hasher.hexdigest() != self.digest:
                tmp.drop()
                raise ValueError(
                    f"the uploaded content does not match its hash {self.digest}; "
                    "send the blob again"
                )
            path = self.store._path(self.digest)
            try:
                self.store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                self.store.fs.mv(tmp.path, path)
            except BaseException:
                tmp.drop()
                raise
            tmp.placed()
            return tmp.size

    def abort(self) -> None:
        """Drops the temporary file, unless the blob was committed."""
        self._tmp.abort()

    async def discard(self) -> None:
        """``abort``, from a coroutine, done even if the coroutine is cancelled."""
        await self._tmp.discard()
