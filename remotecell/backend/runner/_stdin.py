"""``input()`` and ``getpass()`` in a running cell, asked in the notebook.

While a cell runs, both are replaced (as ipykernel replaces them in a kernel): the
prompt goes out as an ``input_request`` event after the output before it, and the cell
waits for the notebook's answer, which the control plane hands over as an ``answer``
instruction (``InputAnswer``). A notebook whose front end allows no input answers with
its own ``StdinNotImplementedError`` message, which the cell's call raises too. A
cancel or a timeout interrupts the wait like any other line of the cell.
"""

from __future__ import annotations

import builtins
import getpass
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from remotecell._proto import pb
from remotecell.contract.events import Body

log = logging.getLogger("remotecell.runner")


class RemoteStdin:
    """The running cell's input requests; ``answer`` is called from the link's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job = ""
        self._waiting = False
        self._answers: queue.SimpleQueue[pb.InputAnswer] = queue.SimpleQueue()

    def answer(self, answer: pb.InputAnswer) -> None:
        with self._lock:
            if answer.job_id != self._job or not self._waiting:
                log.info("dropped an answer to input() that no request of this runner waits for")
                return
            self._waiting = False
        self._answers.put(answer)

    @contextmanager
    def serving(
        self, job_id: str, emit: Callable[[Body], None], flush: Callable[[], object]
    ) -> Iterator[None]:
        """``input`` and ``getpass.getpass`` ask through ``emit`` while the block runs;
        ``flush`` sends the output written before a prompt."""

        def ask(prompt: str, password: bool) -> str:
            flush()
            with self._lock:
                self._waiting = True
            emit(pb.InputRequest(prompt=prompt, password=password))
            try:
                answer = self._wait()
            finally:
                with self._lock:
                    self._waiting = False
            if answer.refused:
                from IPython.core.error import StdinNotImplementedError

                raise StdinNotImplementedError(answer.refused)
            if answer.eof:
                raise EOFError("EOF when reading a line")
            return answer.text

        def remote_input(prompt: Any = "") -> str:
            return ask(str(prompt), password=False)

        def remote_getpass(prompt: str = "Password: ", stream: Any = None) -> str:
            return ask(str(prompt), password=True)

        saved = builtins.input, getpass.getpass
        with self._lock:
            self._job = job_id
        while not self._answers.empty():  # one that came as the last cell ended
            self._answers.get_nowait()
        builtins.input, getpass.getpass = remote_input, remote_getpass
        try:
            yield
        finally:
            builtins.input, getpass.getpass = saved
            with self._lock:
                self._job = ""
                self._waiting = False

    def _wait(self) -> pb.InputAnswer:
        # In short waits: a cancel's SIGINT raises KeyboardInterrupt between them.
        while True:
            try:
                return self._answers.get(timeout=0.2)
            except queue.Empty:
                continue
