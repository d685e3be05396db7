"""A volume's directory, reached only through file descriptors checked to be inside it.

Runners write into a directory-store volume directly (it is bind-mounted), so a cell can
leave symlinks in it, or swap a directory for a symlink while the control plane works
there. Every operation here walks from the volume's root one component at a time
(``dir_fd``), and each directory or file it opens is checked, by its descriptor, to be
inside the volume (``/proc/self/fd``); operations then act relative to that descriptor.
So a symlink that points out of the volume is refused, and one changed mid-operation
cannot redirect a read, a write or a removal outside it. Symlinks that stay inside the
volume are followed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from typing import BinaryIO

_PATH_FLAG = getattr(os, "O_PATH", os.O_RDONLY | os.O_NONBLOCK)


class Escape(PermissionError):
    """The path leads out of the volume."""


class NotAFile(OSError):
    """Not a regular file (a FIFO, a socket, a device): never opened for reading."""


def _fd_path(fd: int) -> str:
    if sys.platform == "linux":
        return os.readlink(f"/proc/self/fd/{fd}")
    import fcntl

    raw = fcntl.fcntl(fd, getattr(fcntl, "F_GETPATH", 50), bytes(1024))
    return os.fsdecode(raw.split(b"\0", 1)[0])


class LocalDir:
    def __init__(self, root: str) -> None:
        self.root = root
        self.real = os.path.realpath(root)

    def _inside(self, fd: int) -> int:
        path = _fd_path(fd)
        if path != self.real and not path.startswith(self.real.rstrip("/") + "/"):
            os.close(fd)
            raise Escape(path)
        return fd

    def open_dir(self, rel: str, create: bool = False) -> int:
        """A descriptor of directory ``rel`` (made, with its parents, if ``create``)."""
        fd = self._inside(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY))
        for part in rel.split("/") if rel else ():
            try:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            finally:
                os.close(fd)
            fd = self._inside(child)
        return fd

    def stat(self, rel: str) -> os.stat_result:
        """``rel``'s status, following symlinks that stay inside."""
        if not rel:
            return os.stat(self.root)
        parent, _, name = rel.rpartition("/")
        dfd = self.open_dir(parent)
        try:
            fd = self._inside(os.open(name, _PATH_FLAG, dir_fd=dfd))
        finally:
            os.close(dfd)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def open_file(self, rel: str) -> tuple[BinaryIO, os.stat_result]:
        """A regular file, open for reading, and its status.

        Raises:
            IsADirectoryError: ``rel`` is a directory.
            NotAFile: ``rel`` is a FIFO, a socket or a device.
        """
        parent, _, name = rel.rpartition("/")
        dfd = self.open_dir(parent)
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer.
            fd = self._inside(os.open(name, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dfd))
        finally:
            os.close(dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise IsADirectoryError(rel) if stat.S_ISDIR(st.st_mode) else NotAFile(rel)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st

    def replace(self, source: str, rel: str) -> os.stat_result:
        """Moves file ``source`` (outside the volume) to ``rel``, replacing what is there
        atomically (a symlink there is replaced, not followed).

        Raises:
            NotADirectoryError: a part of ``rel``'s directory is a file.
            IsADirectoryError: ``rel`` is a directory.
        """
        parent, _, name = rel.rpartition("/")
        dfd = self.open_dir(parent, create=True)
        try:
            os.replace(source, name, dst_dir_fd=dfd)
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)

    def is_dir(self, rel: str) -> bool:
        """Whether ``rel`` itself (not through a final symlink) is a directory."""
        parent, _, name = rel.rpartition("/")
        try:
            dfd = self.open_dir(parent)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            return stat.S_ISDIR(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False
        finally:
            os.close(dfd)

    def remove(self, rel: str, recursive: bool) -> int:
        """Removes a file or a symlink (not its target), or with ``recursive`` a
        directory and what it holds; returns how many files went.

        Raises:
            IsADirectoryError: a directory, without ``recursive``.
        """
        parent, _, name = rel.rpartition("/")
        dfd = self.open_dir(parent)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dfd)
                return 1
            if not recursive:
                raise IsADirectoryError(rel)
            count = 0
            for _, dirs, files, fd in os.fwalk(name, dir_fd=dfd, topdown=False):
                for file in files:
                    os.unlink(file, dir_fd=fd)
                    count += 1
                for directory in dirs:
                    try:
                        os.rmdir(directory, dir_fd=fd)
                    except NotADirectoryError:  # a symlink to a directory
                        os.unlink(directory, dir_fd=fd)
                        count += 1
            os.rmdir(name, dir_fd=dfd)
            return count
        finally:
            os.close(dfd)

    def entries(self, rel: str, recursive: bool) -> Iterator[tuple[str, os.stat_result]]:
        """(path, status) of what directory ``rel`` holds (with ``recursive``: every file
        below it, without descending into symlinks). Symlinks out of the volume, and
        dangling ones, are left out."""
        dfd = self.open_dir(rel)
        try:
            for top, dirs, files, fd in os.fwalk(".", dir_fd=dfd):
                base = top[2:] if top.startswith("./") else ""
                for child in sorted(dirs + files):
                    try:
                        st = os.stat(child, dir_fd=fd, follow_symlinks=False)
                        if stat.S_ISLNK(st.st_mode):
                            target = os.path.realpath(os.path.join(_fd_path(fd), child))
                            if target != self.real and not target.startswith(self.real + "/"):
                                continue
                            st = os.stat(child, dir_fd=fd)
                    except OSError:
                        continue
                    if recursive and stat.S_ISDIR(st.st_mode):
                        continue
                    path = "/".join(p for p in (rel, base, child) if p)
                    yield path, st
                if not recursive:
                    return
        finally:
            os.close(dfd)
