"""A deployment's log: what its replicas did (starting, ready, failing, stopping) and
one line per call (its request id, status and time; a failure's traceback).

Lines go to ``deployments/NAME.log`` in the data directory (kept across restarts, cut
to its newer half past ``MAX_BYTES``) and to whoever follows the log live. Writes are
buffered and flushed at most every ``FLUSH_S``: a busy endpoint writes a line per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

MAX_BYTES = 32 << 20
FLUSH_S = 0.5
#: Lines kept in memory for a follower that starts reading.
TAIL = 1000


@functools.lru_cache(maxsize=4)
def _stamp(second: int) -> str:
    """A line's time (formatted once a second: a busy endpoint logs a line per call)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))


class DeploymentLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._file: IO[str] | None = None
        self._followers: set[asyncio.Queue[str | None]] = set()
        self._dirty = False
        self._flush_at = 0.0

    def line(self, text: str) -> None:
        stamp = _stamp(int(time.time()))
        lines = [f"{stamp} {part}" for part in text.rstrip("\n").split("\n")]
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8", errors="replace")
        self._file.write("\n".join(lines) + "\n")
        self._dirty = True
        now = time.monotonic()
        if now >= self._flush_at:
            self.flush()
        for queue in self._followers:
            for line in lines:
                queue.put_nowait(line)

    def flush(self) -> None:
        self._flush_at = time.monotonic() + FLUSH_S
        if self._file is None or not self._dirty:
            return
        self._file.flush()
        self._dirty = False
        if self._file.tell() > MAX_BYTES:
            self._file.close()
            self._file = None
            data = self.path.read_bytes()
            cut = data.find(b"\n", len(data) // 2) + 1
            self.path.write_bytes(data[cut:])

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        for queue in self._followers:
            queue.put_nowait(None)

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def tail(self, count: int = 0) -> list[str]:
        """The last ``count`` lines kept (0: all of them)."""
        self.flush()
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return lines[-count:] if count else lines

    async def follow(self, count: int = 0) -> AsyncIterator[list[str]]:
        """The last ``count`` lines, then new lines as they come, until the log closes."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._followers.add(queue)
        try:
            yield self.tail(count)
            while True:
                line = await queue.get()
                if line is None:
                    return
                batch = [line]
                while not queue.empty():
                    more = queue.get_nowait()
                    if more is None:
                        yield batch
                        return
                    batch.append(more)
                yield batch
        finally:
            self._followers.discard(queue)
