"""Output written straight to file descriptors 1 and 2, captured for the cell.

``os.system``, a subprocess that inherits the runner's stdout, or a C extension's
``printf`` write to the process's file descriptors, not to ``sys.stdout``. The runner
points fds 1 and 2 at pipes read by two threads: while a cell runs, what arrives becomes
its stream events; between cells it goes to the runner's log (the fds' original
targets), and so does the runner's own logging, which writes to the saved log fd.

At the end of a cell, ``drain()`` writes a marker through each pipe and waits for the
reader to reach it, so everything written before the cell ended is in the cell's output.
"""

from __future__ import annotations

import codecs
import os
import threading
from collections.abc import Callable
from typing import TextIO

#: Called with (fd, text) for output that arrives while a cell runs.
Sink = Callable[[int, str], None]

_MARKER = b"\x00remotecell-drain\x00"


class FdCapture:
    def __init__(self) -> None:
        #: The fds' original targets (the runner's log file), for its own output.
        self.saved = {fd: os.dup(fd) for fd in (1, 2)}
        self.sink: Sink | None = None
        #: Applied to what goes to the log (output between cells): masks secret values.
        self.log_mask: Callable[[bytes], bytes] | None = None
        self._drained = {fd: threading.Event() for fd in (1, 2)}
        for fd in (1, 2):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(
                target=self._pump, args=(fd, read_end), daemon=True, name=f"remotecell-fd{fd}"
            )
            thread.start()

    def log_stream(self) -> TextIO:
        """A text stream on the runner's log, for its logging."""
        return os.fdopen(
            os.dup(self.saved[2]), "w", buffering=1, encoding="utf-8", errors="replace"
        )

    def drain(self, timeout: float = 2.0) -> None:
        """Waits until what was written to fds 1 and 2 so far has been handed on."""
        for fd in (1, 2):
            self._drained[fd].clear()
            os.write(fd, _MARKER)
        for fd in (1, 2):
            self._drained[fd].wait(timeout)

    def _pump(self, fd: int, read_end: int) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                return
            data = pending + chunk
            pending = b""
            while data:
                at = data.find(_MARKER)
                if at < 0:
                    # keep a possible start of the marker for the next read
                    keep = _partial_marker(data)
                    self._forward(fd, data[: len(data) - keep], decoder)
                    pending = data[len(data) - keep :]
                    break
                self._forward(fd, data[:at], decoder)
                data = data[at + len(_MARKER) :]
                self._flush(fd, decoder)
                self._drained[fd].set()

    def _forward(self, fd: int, data: bytes, decoder: codecs.IncrementalDecoder) -> None:
        if not data:
            return
        sink = self.sink
        if sink is None:
            mask = self.log_mask
            os.write(self.saved[fd], mask(data) if mask is not None else data)
            return
        text = decoder.decode(data)
        if text:
            sink(fd, text)

    def _flush(self, fd: int, decoder: codecs.IncrementalDecoder) -> None:
        text = decoder.decode(b"", final=True)
        decoder.reset()
        sink = self.sink
        if text and sink is not None:
            sink(fd, text)


def _partial_marker(data: bytes) -> int:
    """How many bytes at the end of ``data`` could be the start of the marker."""
    for size in range(min(len(_MARKER) - 1, len(data)), 0, -1):
        if _MARKER.startswith(data[-size:]):
            return size
    return 0
