"""Moving content-addressed blobs between a process and the control plane.

Over gRPC by default. When the control plane's blob store is a local directory that
this process can read and write (the embedded default, and runners of the local
executor), blobs are read and written there directly: writes go to a temporary file
renamed into place, reads are copy-on-write memory maps, so a 100 MiB array costs one
write on the way in and no copy on the way out.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
from pathlib import Path

from remotecell._proto import pb
from remotecell.contract.blobs import ID_FILE, blob_relpath
from remotecell.contract.errors import ConfigError


def shared_blob_dir(health: pb.HealthReply) -> Path | None:
    """The control plane's blob directory, if this process shares it (same id read back)."""
    if not health.blob_dir or not health.blob_dir_id:
        return None
    root = Path(health.blob_dir)
    try:
        if (root / ID_FILE).read_text().strip() != health.blob_dir_id:
            return None
    except OSError:
        return None
    return root if os.access(root, os.R_OK | os.W_OK | os.X_OK) else None


def local_has(root: Path, digest: str) -> bool:
    return (root / blob_relpath(digest)).exists()


def local_write(root: Path, digest: str, data: bytes | bytearray | memoryview) -> None:
    """Stores a blob in the shared directory ``root``.

    Raises:
        ConfigError: it cannot be written there (the sentence names the directory).
    """
    path = root / blob_relpath(digest)
    if path.exists():
        return
    tmp = root / "tmp" / f"{digest}.{secrets.token_hex(4)}"
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(
            f"cannot write the cell's values to the blob directory {root}: "
            f"{err.strerror or err} ({err.filename}); make it and the directories in it "
            f"writable by you (chmod -R u+rwX {root}), or free space on its disk"
        ) from None


def local_read(root: Path, digest: str) -> memoryview:
    """A writable, copy-on-write view of a stored blob (writes stay private to this process)."""
    path = root / blob_relpath(digest)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return memoryview(bytearray())
        return memoryview(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY))
