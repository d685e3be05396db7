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
from remotecell.contract.blobs import blob_corrupt
from remotecell.contract.errors import (
    BlobCorruptError,
    BlobNotFoundError,
    ConfigError,
    ImageBuildError,
    RemoteCellError,
    RemoteError,
    remote_error,
)
from remotecell.contract.events import is_end
from remotecell.kernel_magics._monitor_view import MonitorView
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
    """Renders one job's events into the current cell's output.

    With ``shell`` (the notebook's), the cell's value shows as the runner formatted it,
    as the cell's Out (``output_shown``), at the place a local run shows it; ``monitor``
    is the monitor mode (``_monitor_view.MODES``).
    """

    def __init__(
        self,
        client: Client,
        user_ns: dict[str, Any] | None,
        shell: Any = None,
        monitor: str = "full",
    ) -> None:
        self.client = client
        self.user_ns = user_ns
        self.shell = shell
        self.job_id = ""
        self.output: Any = None
        #: Whether the cell's value was shown as its Out already (the caller returns None).
        self.output_shown = False
        self.error: pb.Error | None = None
        #: The process settings the cell left (``Result.process_settings``; "": none said).
        self.process_settings = ""
        #: What the job monitor shows: where the job is, its readings, what it has cost.
        self.progress = MonitorState()
        #: The job's telemetry: the last reading and a summary (peak memory, mean use).
        self.metrics = self.progress.metrics
        self._view = MonitorView(monitor, self.progress, f"remotecell-monitor-{id(self)}")
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
                self._view.show()
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
                    self._view.tick()
                    continue
                if self._handle(event):
                    return self._finish(event.finished)
        except KeyboardInterrupt:
            if self._cancel(events):
                raise _interrupted(self.job_id, self.progress.state) from None
            raise
        finally:
            events.close()
            self._view.flush()

    def _cancel(self, events: EventStream) -> bool:
        """Cancels the job; True once asked (the job's id is known)."""
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
            return False
        try:
            self.client.cancel(self.job_id, "interrupted in the notebook")
        except RemoteCellError as err:
            print(f"remotecell: could not cancel {self.job_id}: {err}", file=sys.stderr)
            return False
        deadline = time.monotonic() + CANCEL_WAIT
        try:
            while time.monotonic() < deadline:
                event = events.next(timeout=0.25)
                if event is not None and self._handle(event):
                    break
        except (StopIteration, KeyboardInterrupt, RemoteCellError):
            pass
        return True

    # -- events ----------------------------------------------------------------------

    def _handle(self, event: pb.JobEvent) -> bool:
        """Renders one event; True at the job's end."""
        self.progress.add(event)
        ended = self._render(event)
        if self.job_id:
            self._view.show()
        if self._view.shown is not None:
            if event.HasField("metrics"):
                self._name_gpus()
            if ended:
                self._view.end()
            else:
                self._view.tick()
        return ended

    def _render(self, event: pb.JobEvent) -> bool:
        kind = event.WhichOneof("body")
        if kind == "accepted":
            self.job_id = event.job_id
        elif kind == "stream":
            self._view.before_output()
            out = sys.stdout if event.stream.name == pb.Stream.STDOUT else sys.stderr
            out.write(event.stream.text)
            out.flush()
        elif kind == "display":
            if event.display.clear:
                _render_display(event.display)
                self._view.cleared(event.display.clear_wait)
            else:
                if not event.display.update:
                    self._view.before_output()
                _render_display(event.display)
        elif kind == "status":
            self._status(event.status)
        elif kind == "result":
            self._take_result(event.result)
        elif kind == "error":
            self.error = event.error
        elif kind == "build":
            self._build_line(event.build)
        elif kind == "input_request":
            from remotecell.kernel_magics import _stdin  # loaded when a cell asks

            _stdin.answer(self.client, event)
        elif kind == "comm":
            from remotecell.kernel_magics import _comms  # loaded when a cell makes a widget

            _comms.receive(self.client, event)
        if kind not in ("build", "accepted", "metrics"):
            self._end_build_tail()
        return is_end(event)

    # -- the job monitor ---------------------------------------------------------------

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
        if self._view.mode == "off":
            return
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
        elif status.attempt:  # a retry: always worth saying (unless the monitor is off)
            if self._view.mode != "off":
                print(f"remotecell: {status.message}", file=sys.stderr)
        else:
            self._running = False
            self._pending_status = status.message

    def _maybe_show_status(self) -> None:
        if (
            not self._view.quiet  # the monitor says where the job is, or nothing should
            and self._pending_status
            and not self._running
            and time.monotonic() - self._since > STATUS_AFTER
        ):
            print(f"remotecell: {self.job_id} {self._pending_status}", file=sys.stderr)
            self._pending_status = ""

    def _take_result(self, result: pb.Result) -> None:
        self.process_settings = result.process_settings or self.process_settings
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
            except (BlobNotFoundError, BlobCorruptError) as err:
                names = ", ".join(n or "the cell's value" for n in value.names) or value.name
                why = (
                    blob_corrupt(err.digest, self.job_id)
                    if isinstance(err, BlobCorruptError)
                    else str(err)
                )
                print(f"remotecell: could not load {names}: {why}", file=sys.stderr)
            for name, error in failed.items():
                print(f"remotecell: not brought back: {_unloadable(name, error)}", file=sys.stderr)
        has_value = result.has_output and "" in loaded
        if result.has_output:
            self.output = loaded.pop("", None)
        if self.user_ns is not None:
            self.user_ns.update(loaded)
        if result.output_data_json and self.shell is not None:
            self._view.before_output()
            _show_out(self.shell, result, self.output, has_value)
            self.output_shown = True

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
        if kind == "user_code" and error.type_name:
            raise remote_error(
                error.type_name,
                error.message,
                list(error.traceback),
                job_id=self.job_id,
                namespace=self.user_ns,
            )
        raise RemoteError(
            error.type_name or ("Cancelled" if kind == "cancelled" else "RemoteFailure"),
            error.message or finished.message,
            list(error.traceback),
            kind=kind,
            job_id=self.job_id,
        )


def _show_out(shell: Any, result: pb.Result, value: Any, has_value: bool) -> None:
    """Shows the cell's Out as the runner formatted it, through the notebook's display
    hook (as ``DisplayHook.__call__`` does), so ``Out``, ``_`` and the execution's
    result are the pulled value (where it could be loaded)."""
    hook = shell.displayhook
    hook.start_displayhook()
    hook.write_output_prompt()
    if has_value:
        hook.update_user_ns(value)
        hook.fill_exec_result(value)
    data = json.loads(result.output_data_json)
    hook.write_format_data(data, json.loads(result.output_metadata_json or "{}"))
    hook.log_output(data)
    hook.finish_displayhook()


def _interrupted(job_id: str, state: str) -> KeyboardInterrupt:
    """The KeyboardInterrupt of a cell interrupted in the notebook, shown as one line
    (which job, and that it was cancelled) instead of remotecell's frames. It stays a
    KeyboardInterrupt, as a local cell's is; IPython shows ``_render_traceback_``."""
    said = "cancelled" if state == "cancelled" else "asked to cancel"
    line = f"KeyboardInterrupt: job {job_id} {said} (interrupted in the notebook)"
    err = KeyboardInterrupt(f"job {job_id} {said}")
    err._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    return err


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
