"""The control plane's content-addressed blob store, on fsspec.

A blob lives at ``ROOT/ab/abcdef...`` under its xxh3-128 hash (``remotecell.client.values.content_hash``). The root is a local
directory by default (shared with same-host clients and runners, see
``remotecell.client._blobs``) or any fsspec URL.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

import fsspec
import xxhash

from remotecell.client._blobs import ID_FILE, blob_relpath

CHUNK = 4 * 1024 * 1024


class BlobStore:
    def __init__(self, url: str) -> None:
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
        path = self._path(digest)
        tmp = f"{self.root}/tmp/{digest}.{secrets.token_hex(4)}"
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        hasher = xxhash.xxh3_128()
        size = 0
        with self.fs.open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                hasher.update(chunk)
                size += len(chunk)
        if hasher.hexdigest() != digest:
            self.fs.rm(tmp)
            raise ValueError(f"blob content does not match its hash {digest}")
        self.fs.mv(tmp, path)
        return size

    def read(self, digest: str) -> Iterator[bytes]:
        with self.fs.open(self._path(digest), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
