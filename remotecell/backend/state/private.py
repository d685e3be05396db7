"""Keeping a control plane's data directory, and its socket's directory, to its owner.

The data directory holds the token, the secrets' key, the job database (every cell's
code and output) and the blobs (every value sent). A directory that exists already keeps
the mode it was made with, so the control plane tightens it at start: the directory and
the state directories in it to 0700, the state files to 0600. One it cannot tighten
(another user owns it) stops the control plane with a sentence.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

#: Directories in the data directory that are only the owner's (blobs, volumes, logs,
#: the socket's directory, image builds).
PRIVATE_DIRS = ("blobs", "volumes", "volume-copies", "logs", "run", "images")
#: Files in the data directory that are only the owner's.
PRIVATE_FILES = (
    "state.sqlite3",
    "state.sqlite3-wal",
    "state.sqlite3-shm",
    "token",
    "secrets.key",
    "server.json",
    "server.lock",
    "start.lock",
)


class NotPrivate(RuntimeError):
    """A path that should be the owner's alone cannot be made so."""


def own(path: Path, mode: int = 0o700) -> None:
    """Makes ``path`` (which exists) this user's alone: ``mode`` where it allowed more.

    Raises:
        NotPrivate: another user owns it, or it is a symbolic link.
    """
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise NotPrivate(
            f"{path} is a symbolic link, so remotecell cannot keep it private; "
            "replace it with a directory of your own"
        )
    if info.st_uid != os.getuid():
        raise NotPrivate(
            f"{path} belongs to another user (uid {info.st_uid}), so remotecell cannot keep "
            "its state private there; pass a --data-dir of your own"
        )
    if stat.S_IMODE(info.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(info.st_mode) & mode)


def tighten(data_dir: Path) -> None:
    """Makes the data directory and the state in it this user's alone (0700 and 0600).

    Raises:
        NotPrivate: one of them belongs to another user.
    """
    own(data_dir)
    for name in PRIVATE_DIRS:
        if (data_dir / name).is_dir():
            own(data_dir / name)
    for name in PRIVATE_FILES:
        if (data_dir / name).exists():
            own(data_dir / name, 0o600)


def socket_dir(data_dir: Path) -> Path:
    """A directory only this user can enter, for a socket whose path in the data
    directory would be too long for ``AF_UNIX``.

    Under ``$XDG_RUNTIME_DIR`` or the temporary directory, named after the data directory
    so runners find a restarted control plane again; where someone else holds that name,
    a fresh directory of a random name instead (``tempfile.mkdtemp``). Either is 0700 and
    this user's, checked, so no other user can put a socket where clients look for one.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base = runtime if runtime and os.access(runtime, os.W_OK | os.X_OK) else tempfile.gettempdir()
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    path = Path(base) / f"remotecell-{os.getuid()}-{digest}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise NotPrivate(f"{path} is not a directory")
        own(path)
    except NotPrivate:
        return Path(tempfile.mkdtemp(prefix=f"remotecell-{os.getuid()}-", dir=base))
    return path
