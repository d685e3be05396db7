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
import sys
import threading
import time
from pathlib import Path

from remotecell._proto import pb
from remotecell.contract.blobs import ID_FILE, blob_relpath, verify
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
        _write_file(tmp, data)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(
            f"cannot write the cell's values to the blob directory {root}: "
            f"{err.strerror or err} ({err.filename}); make it and the directories in it "
            f"writable by you (chmod -R u+rwX {root}), or free space on its disk"
        ) from None


def _write_file(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Writes ``data`` as a new file, its blocks allocated first: on ext4 a 100 MiB
    write then takes 12 ms instead of 20 (where the file system cannot, it just writes)."""
    view = memoryview(data).cast("B")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # as open() makes it
    try:
        if view.nbytes:
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fallocate(fd, 0, view.nbytes)
        written = 0
        while written < view.nbytes:
            written += os.write(fd, view[written:])
    finally:
        os.close(fd)


#: What identifies one state of a stored file: device, inode, size and change time (any
#: write, or a touch of its times, moves the change time; it cannot be set back).
FileState = tuple[int, int, int, int]


def local_read(root: Path, digest: str) -> tuple[memoryview, FileState]:
    """A writable, copy-on-write view of a stored blob (writes stay private to this
    process), and the state of the file it maps."""
    path = root / blob_relpath(digest)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        state = _state(st)
        if st.st_size == 0:
            return memoryview(bytearray()), state
        return memoryview(mmap.mmap(f.fileno(), st.st_size, access=mmap.ACCESS_COPY)), state


def _tick_ns() -> int:
    """How coarse file change times are here (the kernel's coarse clock), or 10 ms."""
    coarse = 5  # CLOCK_REALTIME_COARSE on Linux, which Python does not name
    try:
        if sys.platform.startswith("linux"):
            return max(1, int(time.clock_getres(coarse) * 1e9))
    except OSError:
        pass
    return 10_000_000


class Verified:
    """The blobs this process has checked against their hash, with the state of the file
    each was read from: a file in the same state need not be hashed again (a warm runner
    given the same 100 MiB closure again), and one that changed since is checked again.

    A file's change time moves in ticks of the kernel's coarse clock, so a change within
    the tick of the one before would not show. A state is remembered only when its
    content was hashed once its change time was two ticks old: any later change then has
    a later change time. A large blob read while its change time is fresh (a closure just
    written by the notebook) is hashed once more, in the background, when it has settled.
    """

    _settled_ns = 2 * _tick_ns()
    #: Blobs smaller than this are not hashed again in the background: checking them
    #: costs little anyway.
    confirm_min = 4 * 1024 * 1024

    def __init__(self, most: int = 4096) -> None:
        self._states: dict[str, FileState] = {}
        self._most = most
        self._lock = threading.Lock()

    def check(
        self, digest: str, data: memoryview, state: FileState, path: Path | None = None
    ) -> None:
        """Raises BlobCorruptError when ``data`` (read from ``path``, in ``state``) is
        not the blob ``digest``."""
        with self._lock:
            if self._states.get(digest) == state:
                return
        verify(digest, data)
        age = time.time_ns() - state[3]
        if age > self._settled_ns:
            self._remember(digest, state)
        elif path is not None and data.nbytes >= self.confirm_min:
            delay = (self._settled_ns - age) / 1e9 + 0.001
            timer = threading.Timer(delay, self._confirm, (digest, path, state))
            timer.daemon = True
            timer.start()

    def known(self, digest: str) -> FileState | None:
        with self._lock:
            return self._states.get(digest)

    def _confirm(self, digest: str, path: Path, state: FileState) -> None:
        """Hashes the settled file again and remembers it when it is still the blob,
        unchanged from ``state`` before and after."""
        try:
            with open(path, "rb") as f:
                if _state(os.fstat(f.fileno())) != state:
                    return
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    verify(digest, memoryview(mapped))
                if _state(os.fstat(f.fileno())) != state:
                    return
        except (OSError, ValueError, BufferError):  # BlobCorruptError is a ValueError
            return
        self._remember(digest, state)

    def _remember(self, digest: str, state: FileState) -> None:
        with self._lock:
            if len(self._states) >= self._most:
                self._states.pop(next(iter(self._states)))
            self._states[digest] = state


def _state(st: os.stat_result) -> FileState:
    return (st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)
