"""A file written under a temporary name, then moved into place or dropped: the one
way the control plane takes in an upload (a blob, a volume file).

The temporary file is opened by the first write, not when the writer is made: an
upload whose client goes away while a worker thread makes the writer leaves nothing
behind. Writes, the move into place and ``abort`` take one lock, so an ``abort`` from
a cancelled upload waits for a write still running in its thread, and no write opens
the file again after it. Whatever way an upload ends, ``abort`` (a no-op once the file
is in place) leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

_cleanups: set[asyncio.Future[None]] = set()


class TempFile:
    """Args:
    path: the temporary file (its directory exists or is made by ``opener``).
    opener: opens ``path`` for writing.
    remover: removes ``path``.
    """

    def __init__(self, path: str, opener: Callable[[], Any], remover: Callable[[], Any]) -> None:
        self.path = path
        self.size = 0
        self._opener = opener
        self._remover = remover
        self._file: Any = None
        self._done = False
        self.lock = threading.Lock()

    def file(self) -> Any:
        """The open temporary file (opened now if it is not); hold ``lock``."""
        if self._done:
            raise ValueError("this upload has ended")
        if self._file is None:
            self._file = self._opener()
        return self._file

    def write(self, data: bytes) -> None:
        """Appends ``data``; hold ``lock``."""
        self.file().write(data)
        self.size += len(data)

    def placed(self) -> None:
        """Records that the file was moved into place; hold ``lock``."""
        self._done = True

    def abort(self) -> None:
        """Drops the temporary file, unless it was moved into place."""
        with self.lock:
            self.drop()

    async def discard(self) -> None:
        """``abort`` from a coroutine, in a worker thread, carried out to its end even if
        the awaiting task is cancelled meanwhile: an upload's handler is often cancelled
        again while it cleans up, and a cancelled ``to_thread`` that has not started yet
        would never run."""
        cleanup = asyncio.ensure_future(asyncio.to_thread(self.abort))
        _cleanups.add(cleanup)
        cleanup.add_done_callback(_cleanups.discard)
        await asyncio.shield(cleanup)

    def drop(self) -> None:
        """``abort`` for a caller that holds ``lock``."""
        if self._done:
            return
        self._done = True
        if self._file is None:
            return
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(Exception):
            self._remover()
