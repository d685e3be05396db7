"""Running one cell in the runner's IPython shell and turning what happens into events.

The cell runs in an IPython ``InteractiveShell`` so ``display``, ``!cmd``, magics and
matplotlib (inline backend, PNG) behave as in a notebook. Output is captured where
IPython produces it: ``sys.stdout``/``sys.stderr`` writes, the display publisher, the
display hook (the cell's last expression) and the traceback hook. Each becomes a typed
event body (``contract.events.Body``) handed to ``emit``. The task's end is returned
(``run_task`` returns its ``pb.Finished``) rather than emitted: the layers around the
cell (volumes, telemetry) finish their part, then the caller emits it as the last event.

The cell's source gets one leading comment line, standing for the ``%%remote`` line, so
remote tracebacks show the line numbers the user sees in the notebook cell (IPython
drops leading blank lines, so it must be a comment). A cell that starts with a cell
magic of its own (``%%time``) keeps its first line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from remotecell._proto import pb
from remotecell.backend.runner import _sendback, _settings
from remotecell.backend.runner._fdcapture import FdCapture
from remotecell.backend.runner._fresh import ProcessState
from remotecell.backend.runner._ipython import EventWriter, build_shell, jsonable_bundle
from remotecell.backend.runner._masking import MaskedEmit
from remotecell.backend.secrets.masking import Masker
from remotecell.contract import values
from remotecell.contract.blobs import blob_corrupt
from remotecell.contract.errors import BlobCorruptError
from remotecell.contract.events import Body

Emit = Callable[[Body], None]


class Serving(Protocol):
    """What serves a replica once its setup cell succeeded (``_serve.Replica``)."""

    def serve(self, ns: dict[str, Any], code: str, emit: Emit) -> pb.Finished: ...

    def stop(self, cancel: pb.CancelTask) -> None: ...


class CellShell:
    """One IPython shell; runs tasks one after another on the main thread."""

    def __init__(self, capture: FdCapture | None = None) -> None:
        self.capture = capture
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        self.shell = build_shell()
        self._fresh_ns = dict(self.shell.user_ns)
        self._fresh_process = ProcessState()
        # One sys.stdout and sys.stderr for every cell, as in a kernel: a logging handler
        # a session's cell made writes into whichever cell logs later.
        self._stdout = EventWriter(pb.Stream.STDOUT, _to_log)
        self._stderr = EventWriter(pb.Stream.STDERR, _to_log)
        self._main_thread = threading.main_thread().ident
        self._job = ""
        self._in_cell = False
        self._cancel: pb.CancelTask | None = None
        #: The replica being served (after its setup cell): a cancel drains it.
        self._serving: Serving | None = None
        #: Cancels that came before their task started (it was on its way to this thread).
        self._early: dict[str, pb.CancelTask] = {}
        self._lock = threading.Lock()
        #: Every secret value this runner was given (see ``_masked``).
        self._secret_values: set[str] = set()
        self._masker = Masker(())
        signal.signal(signal.SIGINT, self._on_sigint)

    # -- cancellation (from the link thread) --------------------------------------------

    def interrupt(self, cancel: pb.CancelTask) -> None:
        with self._lock:
            if cancel.job_id != self._job:
                self._early[cancel.job_id] = cancel
                return
            serving = self._serving
            if serving is None:
                if self._cancel is not None:
                    return
                self._cancel = cancel
                self.shell.cancelling = True
            in_cell = self._in_cell
        if serving is not None:  # a replica taking calls drains: nothing is interrupted
            serving.stop(cancel)
        elif in_cell and self._main_thread is not None:
            signal.pthread_kill(self._main_thread, signal.SIGINT)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._in_cell:
            raise KeyboardInterrupt

    # -- one task --------------------------------------------------------------------

    def run_task(
        self,
        task: pb.Task,
        emit: Emit,
        fetch: Callable[[str], Any],
        upload: Callable[[dict], int],
        masked: bool = False,
        serve: Serving | None = None,
    ) -> pb.Finished:
        """Runs one task, sending its events through ``emit`` (with ``masked``, an
        ``emit`` that ``masked(task, ...)`` made already); returns how it ended, which
        the caller emits last.

        A replica's task (``spec.serve`` set) sends no names back; once its cell
        succeeded, ``serve`` serves calls until the replica is stopped, with the task's
        output, environment and masking still in place."""
        spec = task.spec
        with self._lock:
            self._job = task.job_id
            self._cancel = self._early.pop(task.job_id, None)
            self._early.clear()  # any other is for a task that ended before it came
            self.shell.cancelling = self._cancel is not None
        ns = self.shell.user_ns
        saved_env: dict[str, str | None] = {}
        try:
            # Everything the task holds (its spec, env, settings, code) is read in here:
            # nothing a cell or a spec contains may end the runner, only the task.
            if not masked:
                emit = self.masked(task, emit)
            problem = env_problem(spec.env, "env") or env_problem(task.secret_env, "secret")
            if problem is not None:
                return self._fail_setup(emit, problem)
            self.shell.captured = None
            self.shell.displayhook.bundle = None
            if not spec.session:
                ns.clear()
                ns.update(self._fresh_ns)
                self._fresh_process.restore()
            problem = self._apply_settings(spec)
            if problem is not None:
                return self._fail_setup(emit, problem)
            saved_env.update((k, os.environ.get(k)) for k in (*spec.env, *task.secret_env))
            os.environ.update(spec.env)
            os.environ.update(task.secret_env)
            self.shell.display_pub.emit = emit
            self.shell.displayhook.quiet_cell = _quiet(self.shell, spec.code)
            return self._run(spec, ns, emit, fetch, upload, serve)
        except Exception as err:  # a bug of ours, not the cell's: still end the task cleanly
            return runner_failure(emit, err)
        finally:
            self._in_cell = False
            with self._lock:
                self._job = ""
            self.shell.display_pub.emit = None
            for key, old in saved_env.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
            if not spec.session:
                ns.clear()
                ns.update(self._fresh_ns)

    def _apply_settings(self, spec: pb.JobSpec) -> str | None:
        """Applies the notebook's process settings (after a fresh job's reset); returns
        why they could not be, in a sentence."""
        try:
            settings = _settings.parsed(spec.process_settings)
            if not spec.session:
                _settings.apply(settings, self._streams())
            _settings.apply_inline(self.shell, settings.inline)
        except Exception as err:
            return (
                "the notebook's logging, warning or inline figure settings could not be "
                f"applied on the runner ({type(err).__name__}: {_text(err)}), so the cell "
                "did not run; restart the notebook's kernel to clear them"
            )
        return None

    def _run(
        self,
        spec: pb.JobSpec,
        ns: dict[str, Any],
        emit: Emit,
        fetch: Callable[[str], Any],
        upload: Callable[[dict], int],
        serve: Serving | None = None,
    ) -> pb.Finished:
        replica = spec.HasField("serve")
        if spec.HasField("notebook"):
            return self._notebook(spec, emit, fetch, upload)
        try:
            ns.update(values.unpack(spec.closure, fetch, namespace=ns))
        except BlobCorruptError as err:
            return self._fail_setup(emit, blob_corrupt(err.digest, self._job))
        except ModuleNotFoundError as err:
            return self._fail_setup(
                emit,
                f"module {err.name!r} is not installed on the runner; "
                "install it in the runner's environment (or its image)",
            )
        except Exception as err:
            return self._fail_setup(
                emit,
                f"the cell's variables could not be loaded on the runner: "
                f"{type(err).__name__}: {err}",
            )
        result = None
        before = dict(ns)
        with self._captured_output(emit):
            try:
                self._in_cell = True
                if self._cancel is None:
                    result = self.shell.run_cell(
                        _numbered_like_notebook(spec.code), store_history=False
                    )
            except KeyboardInterrupt:
                pass
            finally:
                self._in_cell = False
        after_out = self.shell.display_pub.release()
        if self._cancel is not None or result is None or not result.success:
            for display in after_out:
                emit(display)
        if self._cancel is not None:
            return self._finish_cancelled(emit)
        assert result is not None
        failure = result.error_before_exec or result.error_in_exec
        if failure is not None:
            bound = _sendback.pulled(spec.pull, ns, before)
            changed = {n: ns[n] for n in bound if n not in before or before[n] is not ns[n]}
            if (
                changed and not replica
            ):  # as in a notebook, what the cell bound before it failed stays bound
                settings = self._settings(spec)
                emit(_sendback.result(changed, self._masker, upload, False, **settings))
            etype, evalue, stb = self.shell.captured or (type(failure), failure, [])
            name = (
                etype.__name__
                if etype.__module__ == "builtins"
                else f"{etype.__module__}.{etype.__qualname__}"
            )
            message = _text(evalue)
            emit(
                pb.Error(
                    kind=pb.Error.USER_CODE,
                    type_name=name,
                    message=message,
                    traceback=[_text(line) for line in stb],
                )
            )
            return pb.Finished(state=pb.FAILED, message=f"{name}: {message}")
        if replica:  # nothing goes back: a model must not be pickled
            for display in after_out:
                emit(display)
            return self._serve(spec, ns, emit, serve)
        items = {n: ns[n] for n in _sendback.pulled(spec.pull, ns, before)}
        has_output = result.result is not None
        if has_output:
            items[""] = result.result
        out = {**self._out_bundle(), **self._settings(spec)}
        emit(_sendback.result(items, self._masker, upload, has_output, **out))
        for display in after_out:
            emit(display)
        return pb.Finished(state=pb.SUCCEEDED)

    def _notebook(
        self,
        spec: pb.JobSpec,
        emit: Emit,
        fetch: Callable[[str], Any],
        upload: Callable[[dict], int],
    ) -> pb.Finished:
        """Runs a scheduled notebook's run (``spec.notebook``) in a kernel of its own,
        interruptible by a cancel as a cell is."""
        from remotecell.backend.runner import _notebook_run

        finished: pb.Finished | None = None
        with self._captured_output(emit):
            try:
                self._in_cell = True
                if self._cancel is None:
                    finished = _notebook_run.run_task(
                        spec.notebook, emit, fetch, upload, Path.cwd()
                    )
            except KeyboardInterrupt:
                pass
            finally:
                self._in_cell = False
        if self._cancel is not None or finished is None:
            return self._finish_cancelled(emit)
        return finished

    def _serve(
        self, spec: pb.JobSpec, ns: dict[str, Any], emit: Emit, serve: Serving | None
    ) -> pb.Finished:
        """Serves the replica whose setup cell just succeeded, until it is stopped."""
        if serve is None:
            return self._fail_setup(emit, "this runner cannot serve a deployment's calls")
        with self._lock:
            if self._cancel is None:
                self._serving = serve
        if self._serving is None:  # cancelled as the setup ended
            return self._finish_cancelled(emit)
        try:
            code = self.shell.transform_cell(spec.code)  # `!cmd` and magics as Python
        except Exception:
            code = spec.code
        try:
            with self._captured_output(emit):  # what calls print is the replica's log
                return serve.serve(ns, code, emit)
        finally:
            with self._lock:
                self._serving = None

    def _streams(self) -> dict[str, Any]:
        return {"stdout": self._stdout, "stderr": self._stderr}

    def _settings(self, spec: pb.JobSpec) -> dict[str, str]:
        """The process settings the cell left, for the notebook's later jobs (a session
        keeps its own)."""
        if spec.session:
            return {}
        settings = _settings.report(self._fresh_process.filters, self._streams())
        return {"process_settings": settings.to_json()}

    def _out_bundle(self) -> dict[str, str]:
        """The Out as this shell formatted it, for the Result (none that shows a secret)."""
        bundle = self.shell.displayhook.bundle
        if bundle is None:
            return {}
        data, metadata = bundle
        data_json = json.dumps(jsonable_bundle(data), default=str)
        metadata_json = json.dumps(metadata or {}, default=str)
        if self._masker and (
            self._masker.found_in(data_json.encode())
            or self._masker.found_in(metadata_json.encode())
        ):
            return {}
        return {"output_data_json": data_json, "output_metadata_json": metadata_json}

    @contextmanager
    def _captured_output(self, emit: Emit):  # type: ignore[no-untyped-def]
        saved = sys.stdout, sys.stderr
        out, err = self._stdout, self._stderr
        out.emit = err.emit = emit
        sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
        publisher = self.shell.display_pub

        def flush_both() -> None:
            out.flush()
            err.flush()

        publisher.before_publish = flush_both
        capture = self.capture
        if capture is not None:

            def fd_output(fd: int, text: str) -> None:
                name = pb.Stream.STDOUT if fd == 1 else pb.Stream.STDERR
                emit(pb.Stream(name=name, text=text))

            capture.sink = fd_output
        try:
            yield
        finally:
            out.flush()
            err.flush()
            if capture is not None:
                capture.drain()
                capture.sink = None
            publisher.before_publish = None
            sys.stdout, sys.stderr = saved
            out.emit = err.emit = _to_log

    # -- secrets -----------------------------------------------------------------------

    def masked(self, task: pb.Task, emit: Emit) -> Emit:
        """``emit`` masking every secret value this runner was given (this task's and
        earlier ones'), and the runner's log too; ``emit`` itself while there are none."""
        self._secret_values.update(task.secret_env.values())
        self._masker = Masker(self._secret_values)
        if not self._masker:
            return emit
        if self.capture is not None:
            self.capture.log_masker = self._masker
        return MaskedEmit(emit, self._masker)

    def _fail_setup(self, emit: Emit, message: str) -> pb.Finished:
        emit(pb.Error(kind=pb.Error.SETUP, type_name="SetupError", message=message))
        return pb.Finished(state=pb.FAILED, message=message)

    def _finish_cancelled(self, emit: Emit) -> pb.Finished:
        cancel = self._cancel
        assert cancel is not None
        if cancel.timeout:
            emit(pb.Error(kind=pb.Error.TIMEOUT, type_name="TimeoutError", message=cancel.reason))
            return pb.Finished(state=pb.FAILED, message=cancel.reason)
        emit(pb.Error(kind=pb.Error.CANCELLED, type_name="Cancelled", message=cancel.reason))
        return pb.Finished(state=pb.CANCELLED, message=cancel.reason)


def runner_failure(emit: Emit, err: Exception) -> pb.Finished:
    """Ends a task that failed in the runner's own code (not the cell's): an internal
    error, and the runner goes on to its next task."""
    message = _text(err)
    emit(
        pb.Error(
            kind=pb.Error.INTERNAL,
            type_name=type(err).__name__,
            message=message,
            traceback=[_text(line) for line in traceback.format_exc().splitlines()],
        )
    )
    return pb.Finished(state=pb.FAILED, message=f"the runner failed: {message}")


def env_problem(env: Mapping[str, str], what: str) -> str | None:
    """Why ``env`` cannot be set in this process's environment, in a sentence (naming
    the key, never the value), or None. The control plane checks a job's env too."""
    for key, value in env.items():
        if not key or "=" in key or "\0" in key:
            return (
                f"{what} key {key[:80]!r} cannot be an environment variable's name, which "
                "must not be empty or hold '=' or a NUL character; use letters, digits "
                "and '_' (for example HF_TOKEN)"
            )
        if "\0" in value:
            return (
                f"the value of {what} key {key!r} holds a NUL character, which no "
                "environment variable can hold; remove it"
            )
    return None


def _quiet(shell: Any, code: str) -> bool:
    """Whether the cell ends with a ';' (its Out is not shown), as IPython decides it, on
    the transformed cell (``!cmd`` is Python then)."""
    try:
        return bool(shell.displayhook.semicolon_at_end_of_expression(shell.transform_cell(code)))
    except Exception:  # code that does not tokenize: running it reports its SyntaxError
        return False


def _text(value: object) -> str:
    """``str(value)`` fit for an event: whatever its ``__str__`` does, lone surrogates
    escaped (a protobuf string holds UTF-8 only)."""
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__name__} object whose str() failed>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _to_log(body: Body) -> None:
    # What is written to a cell's stream after its end (by a thread it started).
    stream = sys.__stdout__ if getattr(body, "name", 0) == pb.Stream.STDOUT else sys.__stderr__
    if isinstance(body, pb.Stream) and stream is not None:
        stream.write(body.text)


def _numbered_like_notebook(code: str) -> str:
    return code if code.lstrip().startswith("%%") else "# %%remote\n" + code
