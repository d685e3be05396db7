"""Following a remote job from the notebook: render its events, bring its results back.

Used by ``%%remote``, ``%remote_attach`` and ``RemoteJob.result()`` alike, so a replay
after a kernel restart shows exactly what the live run showed.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from typing import Any

from remotecell._proto import pb
from remotecell.client import Client, EventStream
from remotecell.contract import values
from remotecell.contract.errors import (
    BlobNotFoundError,
    ConfigError,
    ImageBuildError,
    RemoteCellError,
    RemoteError,
)
from remotecell.contract.events import is_end
from remotecell.kernel_magics import _stdin
from remotecell.widgets._monitor_state import MonitorState

#: A job still queued after this long says why (starting a runner, waiting for one).
STATUS_AFTER = 1.0
#: How many lines of a build tool's output show while an image builds.
BUILD_TAIL_LINES = 8
#: After an interrupt, how long to wait for the job's own end before giving up on it.
CANCEL_WAIT = 10.0

_ERROR_KINDS = {
    pb.Error.USER_CODE: "user_code",
    pb.Error.RUNNER_DIED: "runner_died",
    pb.Error.TIMEOUT: "timeout",
    pb.Error.CANCELLED: "cancelled",
    pb.Error.SETUP: "setup",
    pb.Error.INTERNAL: "internal",
    pb.Error.IMAGE_BUILD: "image_build",
}


class JobFollower:
    """Renders one job's events into the current cell's output."""

    def __init__(self, client: Client, user_ns: dict[str, Any] | None) -> None:
        self.client = client
        self.user_ns = user_ns
        self.job_id = ""
        self.output: Any = None
        self.error: pb.Error | None = None
        #: What the job monitor shows: where the job is, its readings, what it has cost.
        self.progress = MonitorState()
        #: The job's telemetry: the last reading and a summary (peak memory, mean use).
        self.metrics = self.progress.metrics
        self._monitor: Any = None  # the JobMonitor widget, once shown
        self._monitor_tried = False
        self._monitor_id = f"remotecell-monitor-{id(self)}"
        self._named_gpus = False
        self._running = False
        self._pending_status = ""
        self._since = time.monotonic()
        self._tail: collections.deque[str] = collections.deque(maxlen=BUILD_TAIL_LINES)
        self._tail_id = f"remotecell-build-{id(self)}"
        self._tail_open = False
        self._tail_shown = 0.0

    def follow(self, events: EventStream) -> Any:
        """Consumes ``events`` to the job's end; returns the cell's value or raises RemoteError.

        A KeyboardInterrupt cancels the job, waits briefly for it to stop, and re-raises.
        """
        try:
            if self.job_id:
                self._show_monitor()
            while True:
                try:
                    event = events.next(timeout=0.25)
                except StopIteration:
                    raise RemoteCellError(
                        f"the control plane closed job {self.job_id}'s event stream before it ended; "
                        f"`%remote_attach {self.job_id}` resumes it"
                    ) from None
                if event is None:
                    self._maybe_show_status()
                    if self._monitor is not None:
                        self._monitor.tick()
                    continue
                if self._handle(event):
                    return self._finish(event.finished)
        except KeyboardInterrupt:
            self._cancel(events)
            raise
        finally:
            events.close()
            if self._monitor is not None:
                self._monitor.flush()

    def _cancel(self, events: EventStream) -> None:
        # Interrupted before the job's id came back: it is on its way (the control plane
        # sends it first), and the job must not run on unseen.
        deadline = time.monotonic() + CANCEL_WAIT
        try:
            while not self.job_id and time.monotonic() < deadline:
                event = events.next(timeout=0.25)
                if event is not None:
                    self._handle(event)
        except (StopIteration, KeyboardInterrupt, RemoteCellError):
            pass
        if not self.job_id:
            return
        try:
            self.client.cancel(self.job_id, "interrupted in the notebook")
        except RemoteCellError as err:
            print(f"remotecell: could not cancel {self.job_id}: {err}", file=sys.stderr)
            return
        deadline = time.monotonic() + CANCEL_WAIT
        try:
            while time.monotonic() < deadline:
                event = events.next(timeout=0.25)
                if event is not None and self._handle(event):
                    return
        except (StopIteration, KeyboardInterrupt, RemoteCellError):
            return

    # -- events ----------------------------------------------------------------------

    def _handle(self, event: pb.JobEvent) -> bool:
        """Renders one event; True at the job's end."""
        self.progress.add(event)
        ended = self._render(event)
        if self.job_id:
            self._show_monitor()
        if self._monitor is not None:
            if event.HasField("metrics"):
                self._name_gpus()
            if ended:
                self._end_monitor()
            else:
                self._monitor.tick()
        return ended

    def _render(self, event: pb.JobEvent) -> bool:
        kind = event.WhichOneof("body")
        if kind == "accepted":
            self.job_id = event.job_id
        elif kind == "stream":
            out = sys.stdout if event.stream.name == pb.Stream.STDOUT else sys.stderr
            out.write(event.stream.text)
            out.flush()
        elif kind == "display":
            _render_display(event.display)
            if event.display.clear and self._monitor is not None:
                # The cell cleared its output: the monitor comes back first.
                from IPython.display import display

                display(self._monitor, display_id=self._monitor_id)
        elif kind == "status":
            self._status(event.status)
        elif kind == "result":
            self._take_result(event.result)
        elif kind == "error":
            self.error = event.error
        elif kind == "build":
            self._build_line(event.build)
        elif kind == "input_request":
            _stdin.answer(self.client, event)
        if kind not in ("build", "accepted", "metrics"):
            self._end_build_tail()
        return is_end(event)

    # -- the job monitor ---------------------------------------------------------------

    def _show_monitor(self) -> None:
        """Shows the job's monitor in the cell, where a front end can show widgets: in a
        Jupyter kernel (a terminal IPython keeps the plain status lines)."""
        if self._monitor_tried:
            return
        self._monitor_tried = True
        from IPython import get_ipython

        if getattr(get_ipython(), "kernel", None) is None:
            return
        from IPython.display import display

        try:
            from remotecell.widgets import JobMonitor
        except ImportError:  # anywidget missing from this kernel: the status lines remain
            return
        self._monitor = JobMonitor(self.progress)
        display(self._monitor, display_id=self._monitor_id)

    def _end_monitor(self) -> None:
        """The final sync, and the final text for front ends that keep only text (nbclient
        records a display's text/plain as shown, and updates it on update_display)."""
        from IPython.display import update_display

        self._monitor.flush()
        update_display(self._monitor, display_id=self._monitor_id)

    def _name_gpus(self) -> None:
        """Model names (and types, for the cost) of the job's GPUs from the inventory, once."""
        if self._named_gpus or not self.progress.unnamed_gpus():
            return
        self._named_gpus = True
        try:
            reply = self.client.list_gpus()
        except RemoteCellError:
            return  # the monitor labels them by index alone
        self.progress.name_gpus({gpu.uuid: (gpu.name, gpu.type) for gpu in reply.gpus})

    def _build_line(self, build: pb.Build) -> None:
        """Build progress lines stay in the output; the tools' output shows as a tail of
        the last few lines, updated in place, that goes away when the build ends."""
        if build.progress:
            print(f"remotecell: {build.line}", file=sys.stderr)
            return
        self._tail.append(build.line)
        now = time.monotonic()
        if now - self._tail_shown < 0.2:
            return
        self._tail_shown = now
        self._show_tail("\n".join(self._tail))

    def _show_tail(self, text: str) -> None:
        from IPython.display import publish_display_data

        kwargs: dict[str, Any] = {"transient": {"display_id": self._tail_id}}
        if self._tail_open:
            kwargs["update"] = True
        publish_display_data({"text/plain": text}, {}, **kwargs)
        self._tail_open = True

    def _end_build_tail(self) -> None:
        if self._tail_open:
            self._show_tail("")
            self._tail_open = False
        self._tail.clear()

    def _status(self, status: pb.Status) -> None:
        if status.state == pb.RUNNING:
            self._running = True
            self._pending_status = ""
        elif status.attempt:  # a retry: always worth saying
            print(f"remotecell: {status.message}", file=sys.stderr)
        else:
            self._running = False
            self._pending_status = status.message

    def _maybe_show_status(self) -> None:
        if (
            self._monitor is None  # the monitor says where the job is
            and self._pending_status
            and not self._running
            and time.monotonic() - self._since > STATUS_AFTER
        ):
            print(f"remotecell: {self.job_id} {self._pending_status}", file=sys.stderr)
            self._pending_status = ""

    def _take_result(self, result: pb.Result) -> None:
        for line in result.skipped:
            print(f"remotecell: not brought back: {line}", file=sys.stderr)
        ns = self.user_ns if self.user_ns is not None else {}
        loaded: dict[str, Any] = {}
        for value in result.values:
            failed: dict[str, Exception] = {}
            try:
                loaded.update(
                    values.unpack([value], self.client.fetch, namespace=ns, errors=failed)
                )
            except BlobNotFoundError as err:
                names = ", ".join(n or "the cell's value" for n in value.names) or value.name
                print(f"remotecell: could not load {names}: {err}", file=sys.stderr)
            for name, error in failed.items():
                print(f"remotecell: not brought back: {_unloadable(name, error)}", file=sys.stderr)
        if result.has_output:
            self.output = loaded.pop("", None)
        if self.user_ns is not None:
            self.user_ns.update(loaded)

    def _finish(self, finished: pb.Finished) -> Any:
        if finished.state == pb.SUCCEEDED:
            return self.output
        error = self.error or pb.Error(kind=pb.Error.INTERNAL, message=finished.message)
        if error.kind == pb.Error.IMAGE_BUILD:
            raise (ConfigError if error.type_name == "ConfigError" else ImageBuildError)(
                error.message
            )
        kind = _ERROR_KINDS.get(error.kind, "internal")
        if finished.state == pb.CANCELLED:
            kind = "cancelled"
        raise RemoteError(
            error.type_name or ("Cancelled" if kind == "cancelled" else "RemoteFailure"),
            error.message or finished.message,
            list(error.traceback),
            kind=kind,
            job_id=self.job_id,
        )


def _unloadable(name: str, error: Exception) -> str:
    """Why a pulled name did not arrive, for the line naming it (the other names did)."""
    label = "the cell's result" if name == "" else f"`{name}`"
    if isinstance(error, ModuleNotFoundError):
        return (
            f"{label}: module {error.name!r} is not installed in this kernel; "
            "install it here to bring the value back"
        )
    return f"{label}: it cannot be loaded in this kernel: {type(error).__name__}: {error}"


def _render_display(display: pb.Display) -> None:
    from IPython.display import clear_output, publish_display_data

    if display.clear:
        clear_output(wait=display.clear_wait)
        return
    data = json.loads(display.data_json or "{}")
    metadata = json.loads(display.metadata_json or "{}")
    kwargs: dict[str, Any] = {}
    if display.display_id:
        kwargs["transient"] = {"display_id": display.display_id}
        if display.update:
            kwargs["update"] = True
    publish_display_data(data, metadata, **kwargs)
