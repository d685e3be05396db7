"""Output written straight to file descriptors 1 and 2, captured for the cell.

``os.system``, a subprocess that inherits the runner's stdout, or a C extension's
``printf`` write to the process's file descriptors, not to ``sys.stdout``. The runner
points fds 1 and 2 at pipes read by two threads: while a cell runs, what arrives becomes
its stream events; between cells it goes to the runner's log (the fds' original
targets), and so does the runner's own logging, which writes to the saved log fd.
What goes to the log is masked (``log_masker``): an end that could begin a secret value
waits up to ``LOG_HOLD_BACK`` seconds for the rest, so a value written in two pieces is
masked too.

At the end of a cell, ``drain()`` writes a marker through each pipe and waits for the
reader to reach it, so everything written before the cell ended is in the cell's output.
A pipe with nothing unread and nothing half-handled (the usual case: most cells write
to ``sys.stdout``, not to fd 1) needs no marker: its reader handles what it reads while
holding a lock, so ``drain()`` takes that lock and looks.
"""

from __future__ import annotations

import codecs
import os
import select
import threading
from collections.abc import Callable
from typing import TextIO

from remotecell.backend.secrets.masking import Masker

#: Called with (fd, text) for output that arrives while a cell runs.
Sink = Callable[[int, str], None]

_MARKER = b"\x00remotecell-drain\x00"
#: Seconds a log write's end that could begin a secret value waits for the rest.
LOG_HOLD_BACK = 0.5


class FdCapture:
    def __init__(self) -> None:
        #: The fds' original targets (the runner's log file), for its own output.
        self.saved = {fd: os.dup(fd) for fd in (1, 2)}
        self.sink: Sink | None = None
        #: Masks secret values in what goes to the log (output between cells).
        self.log_masker: Masker | None = None
        #: Per fd, a log write's end held back because it could begin a secret value.
        self._log_pending = {1: b"", 2: b""}
        self._drained = {fd: threading.Event() for fd in (1, 2)}
        #: Held by a reader while it handles what it read (see ``drain``).
        self._handling = {fd: threading.Lock() for fd in (1, 2)}
        self._read_ends: dict[int, int] = {}
        self._decoders = {
            fd: codecs.getincrementaldecoder("utf-8")(errors="replace") for fd in (1, 2)
        }
        #: Per fd, read bytes that could be the start of the marker.
        self._partial = {1: b"", 2: b""}
        for fd in (1, 2):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            self._read_ends[fd] = read_end
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
        busy = [fd for fd in (1, 2) if not self._idle(fd)]
        for fd in busy:
            self._drained[fd].clear()
            os.write(fd, _MARKER)
        for fd in busy:
            self._drained[fd].wait(timeout)

    def _idle(self, fd: int) -> bool:
        """Whether everything written to ``fd`` so far has been handed on already."""
        with self._handling[fd]:
            unread, _, _ = select.select([self._read_ends[fd]], [], [], 0)
            return not unread and not self._partial[fd] and not self._decoders[fd].getstate()[0]

    def _pump(self, fd: int, read_end: int) -> None:
        decoder = self._decoders[fd]
        while True:
            # A held-back end goes out once no more output comes for a moment.
            hold = LOG_HOLD_BACK if self._log_pending[fd] else None
            ready, _, _ = select.select([read_end], [], [], hold)
            with self._handling[fd]:
                if not ready:
                    self._flush_log(fd)
                    continue
                chunk = os.read(read_end, 65536)
                if not chunk:
                    self._flush_log(fd)
                    return
                self._handle(fd, self._partial[fd] + chunk, decoder)

    def _handle(self, fd: int, data: bytes, decoder: codecs.IncrementalDecoder) -> None:
        self._partial[fd] = b""
        while data:
            at = data.find(_MARKER)
            if at < 0:
                # keep a possible start of the marker for the next read
                keep = _partial_marker(data)
                self._forward(fd, data[: len(data) - keep], decoder)
                self._partial[fd] = data[len(data) - keep :]
                return
            self._forward(fd, data[:at], decoder)
            data = data[at + len(_MARKER) :]
            self._flush(fd, decoder)
            self._drained[fd].set()

    def _forward(self, fd: int, data: bytes, decoder: codecs.IncrementalDecoder) -> None:
        if not data:
            return
        sink = self.sink
        if sink is None:
            masker = self.log_masker
            if masker is None:
                os.write(self.saved[fd], data)
                return
            data = self._log_pending[fd] + data
            cut = masker.log_cut(data)
            self._log_pending[fd] = data[cut:]
            if cut:
                os.write(self.saved[fd], masker.mask_bytes(data[:cut]))
            return
        self._flush_log(fd)
        text = decoder.decode(data)
        if text:
            sink(fd, text)

    def _flush_log(self, fd: int) -> None:
        pending, self._log_pending[fd] = self._log_pending[fd], b""
        if pending:
            masker = self.log_masker
            os.write(self.saved[fd], masker.mask_bytes(pending) if masker is not None else pending)

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
