"""Comms (ipywidgets' widgets) that cells open on the runner, proxied to the notebook.

``comm.create_comm`` (what ipywidgets >= 8 and others call) makes a ``RunnerComm``: its
``comm_open``, ``comm_msg`` and ``comm_close`` go out as ``comm`` events of the running
cell's job, and the notebook opens a comm of the same id there. What the front end sends
to it comes back as a ``comm`` instruction (``CommToRunner``), which the main thread
handles between cells, as a kernel handles its front end's messages: the widget's
callbacks run then, and what they send and print goes back in a ``CommReply``.

A runner without a session forgets its comms when the task ends (the next job's
namespace is fresh); a session runner keeps them, so a slider moved after its cell
ended still runs its callback there.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import comm
from comm.base_comm import BaseComm, CommManager

from remotecell._proto import pb
from remotecell.contract import _widgets as widgets
from remotecell.contract import comms as rules
from remotecell.contract.events import Body, job_event

log = logging.getLogger("remotecell.runner")

Emit = Callable[[Body], None]


class _Kernel:
    """What an Output widget asks of ``comm.kernel``: the request it runs for."""

    @staticmethod
    def get_parent(channel: str = "shell") -> dict:
        return {"header": {"msg_id": rules.PARENT_MSG_ID}}


class RunnerComm(BaseComm):
    kernel = _Kernel()

    def __init__(self, *args: Any, comms: RemoteComms, **kwargs: Any) -> None:
        self._comms = comms
        super().__init__(*args, **kwargs)

    def publish_msg(
        self,
        msg_type: str,
        data: Any = None,
        metadata: Any = None,
        buffers: Any = None,
        **keys: Any,
    ) -> None:
        self._comms.send(
            msg_type,
            self.comm_id,
            data,
            metadata,
            buffers,
            keys.get("target_name") or "",
            keys.get("target_module") or "",
        )


class RemoteComms:
    """The comms of this runner's cells, and where their messages go now."""

    def __init__(self) -> None:
        self.manager = CommManager()
        self._lock = threading.Lock()
        self._emit: Emit | None = None
        self._job = ""
        #: The job whose cell opened each comm (the notebook sends to it by that job).
        self._owner: dict[str, str] = {}

    def install(self) -> None:
        """Makes ``comm.create_comm`` and ``comm.get_comm_manager`` this runner's."""

        def create_comm(*args: Any, **kwargs: Any) -> BaseComm:
            return RunnerComm(*args, comms=self, **kwargs)

        comm.create_comm = create_comm
        comm.get_comm_manager = lambda: self.manager
        widgets.use(self)

    def comm(self, model_id: str) -> BaseComm:
        """A comm for a widget the notebook sent (made in an earlier cell), opened
        already: its messages reach the notebook's comm of the same id."""
        opened = RunnerComm(
            comm_id=model_id, target_name="jupyter.widget", primary=False, comms=self
        )
        self.manager.register_comm(opened)
        return opened

    def bound(self, model_id: str, widget: Any) -> None:
        pass

    def send(
        self,
        msg_type: str,
        comm_id: str,
        data: Any,
        metadata: Any,
        buffers: Any,
        target_name: str = "",
        target_module: str = "",
    ) -> None:
        with self._lock:
            emit, job = self._emit, self._job
        if emit is None:  # a thread of a cell that ended, or a widget of a job gone by
            log.info(
                "dropped a %s of comm %s: no cell or notebook message to send it with",
                msg_type,
                comm_id,
            )
            return
        try:
            message = rules.to_proto(
                msg_type, comm_id, data, metadata, buffers, target_name, target_module
            )
        except (rules.CommTooLarge, TypeError, ValueError) as err:
            emit(pb.Stream(name=pb.Stream.STDERR, text=f"remotecell: {err}\n"))
            return
        if msg_type == "comm_open" and job:
            self._owner[comm_id] = job
        emit(message)

    @contextmanager
    def serving(self, job_id: str, emit: Emit, keep: bool) -> Iterator[None]:
        """The running cell's comms send through ``emit``; with ``keep`` false (no
        session) the comms are forgotten when the block ends."""
        with self._lock:
            self._emit, self._job = emit, job_id
        try:
            yield
        finally:
            with self._lock:
                self._emit, self._job = None, ""
            if not keep:
                self.forget()

    def forget(self) -> None:
        """Drops every comm without a message (the notebook's widgets stay as they are)."""
        for comm_id, opened in list(self.manager.comms.items()):
            opened._closed = True  # no comm_close: the notebook keeps the widget's last state
            self.manager.unregister_comm(opened)
            self._owner.pop(comm_id, None)

    def handle(self, request: pb.CommToRunner, around: Callable[[Emit], Any]) -> pb.CommReply:
        """Hands the front end's message to its comm (on the main thread, no cell
        running); what the comm sends and ``around(emit)`` captures is the reply."""
        reply = pb.CommReply(request_id=request.request_id)
        message = request.message
        opened = self.manager.get_comm(message.comm_id)
        if opened is None or self._owner.get(message.comm_id) not in (None, request.job_id):
            reply.refused = (
                f"no widget with comm {message.comm_id} is open on this runner for job "
                f"{request.job_id}"
            )
            return reply
        job_id = request.job_id
        try:
            msg = _jupyter_message(message)
        except ValueError as err:
            reply.refused = (
                f"the message for comm {message.comm_id} is not valid JSON ({err}); "
                "the widget did not get it"
            )
            return reply

        def collect(body: Body) -> None:
            reply.events.append(job_event(job_id, body))

        with self._lock:
            self._emit, self._job = collect, job_id
        try:
            with around(collect):
                if message.kind == pb.CommMessage.CLOSE:
                    opened._closed = True
                    opened.handle_close(msg)
                    self.manager.unregister_comm(opened)
                else:
                    opened.handle_msg(msg)
        except Exception:
            log.exception("a widget's handler failed on comm %s", message.comm_id)
        finally:
            with self._lock:
                self._emit, self._job = None, ""
        return reply


def _jupyter_message(message: pb.CommMessage) -> dict:
    """The Jupyter message a kernel's comm manager would hand to the comm."""
    msg_type = "comm_close" if message.kind == pb.CommMessage.CLOSE else "comm_msg"
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "", "username": ""}
    return {
        "header": header,
        "msg_id": header["msg_id"],
        "msg_type": msg_type,
        "parent_header": {},
        "metadata": rules.metadata(message),
        "content": {"comm_id": message.comm_id, "data": rules.data(message)},
        "buffers": [memoryview(b) for b in message.buffers],
    }


@contextmanager
def idle_output(cell_shell: Any, emit: Emit) -> Iterator[None]:
    """What a widget's callback prints and displays between cells goes to ``emit``, as a
    cell's would (the ``CellShell``'s own capture)."""
    shell = cell_shell.shell
    saved = shell.display_pub.emit
    shell.display_pub.emit = emit
    try:
        with cell_shell._captured_output(emit):
            yield
    finally:
        shell.display_pub.emit = saved
