"""The runner's IPython shell and its streams: an ``InteractiveShell`` whose display
publisher, display hook and ``sys.stdout``/``sys.stderr`` turn what a cell shows into
event bodies (``CellShell`` in ``_shell.py`` runs cells in it)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from remotecell._proto import pb
from remotecell.contract import values
from remotecell.contract.events import Body

Emit = Callable[[Body], None]


class EventWriter:
    """A line-buffered text stream whose lines become stream events.

    ``print("a", b)`` makes four writes; buffering to the newline (or to ``flush()``,
    which progress bars call) sends them as one event, as a terminal would show them.
    """

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, name: int, emit: Emit) -> None:
        self._name = name
        self.emit = emit  # the running cell's
        self._buffer: list[str] = []

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if "\n" in text:
            head, _, tail = text.rpartition("\n")
            self._buffer.append(head + "\n")
            self.flush()
            if tail:
                self._buffer.append(tail)
        elif text:
            self._buffer.append(text)
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._buffer:
            # Lone surrogates (``print(chr(0xD800))``) escaped: a protobuf string is UTF-8.
            text = "".join(self._buffer).encode("utf-8", "backslashreplace").decode("utf-8")
            self._buffer.clear()
            self.emit(pb.Stream(name=self._name, text=text))  # type: ignore[arg-type]

    def isatty(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False

    def __reduce__(self) -> tuple[Any, ...]:
        # A cell's sys.stdout (kept in a value, a default) is the other side's sys.stdout.
        return values.ProcessStream, ("stdout" if self._name == pb.Stream.STDOUT else "stderr",)


def jsonable_bundle(data: dict[str, Any]) -> dict[str, Any]:
    # Binary MIME data (PNG from matplotlib) travels base64-encoded, as Jupyter expects.
    return {
        k: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v
        for k, v in data.items()
    }


def build_shell() -> Any:
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class ResultHook(DisplayHook):
        """Keeps the last expression's value for the Result event instead of printing it,
        formatted as the notebook's Out (this shell's formatters, ``_repr_*_``).

        What is displayed after it (matplotlib's figures, shown in ``post_execute``) is
        held back until the Result is sent: a notebook shows the Out first.
        """

        quiet_cell = False
        bundle: tuple[dict[str, Any], dict[str, Any]] | None = None

        def __call__(self, result: Any = None) -> None:
            if result is not None and not self.quiet_cell:
                self.fill_exec_result(result)
                self.bundle = self.compute_format_data(result)
                if self.shell is not None:
                    self.shell.display_pub.held = []

    class Publisher(DisplayPublisher):
        emit: Emit | None = None
        before_publish: Callable[[], object] | None = None  # flushes buffered output first
        held: list[pb.Display] | None = None  # displays after the Out, until the Result

        def _send(self, display: pb.Display) -> None:
            if self.held is not None:
                self.held.append(display)
            elif self.emit is not None:
                self.emit(display)

        def release(self) -> list[pb.Display]:
            held, self.held = self.held or [], None
            return held

        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):  # type: ignore[no-untyped-def,override]
            if self.emit is None:
                return
            if self.before_publish is not None:
                self.before_publish()
            display_id = (transient or {}).get("display_id", "")
            self._send(
                pb.Display(
                    data_json=json.dumps(jsonable_bundle(data), default=str),
                    metadata_json=json.dumps(metadata or {}, default=str),
                    display_id=str(display_id or ""),
                    update=bool(update),
                )
            )

        def clear_output(self, wait: bool = False) -> None:
            if self.before_publish is not None:
                self.before_publish()
            if self.emit is not None:
                self._send(pb.Display(clear=True, clear_wait=wait))

    class RunnerShell(InteractiveShell):
        displayhook_class = ResultHook
        display_pub_class = Publisher
        captured: tuple[Any, ...] | None = None
        cancelling = False
        in_callback = False

        def _showtraceback(self, etype, evalue, stb):  # type: ignore[no-untyped-def]
            if self.in_callback:  # the cell goes on: shown where it happened, as locally
                print(self.InteractiveTB.stb2text(stb), file=sys.stderr)
                return
            self.captured = (etype, evalue, stb)

        def init_events(self) -> None:
            super().init_events()
            trigger = self.events.trigger

            def trigger_in_callback(event: str, *args: Any, **kwargs: Any) -> None:
                # A callback's error (matplotlib's figure flush in post_execute) is shown.
                self.in_callback = True
                try:
                    trigger(event, *args, **kwargs)
                finally:
                    self.in_callback = False

            self.events.trigger = trigger_in_callback  # type: ignore[method-assign]

        def enable_gui(self, gui: str | None = None) -> None:
            if gui not in (None, "inline"):
                raise UsageError(
                    f"the runner has no {gui} event loop to show windows in; "
                    "use %matplotlib inline, which shows figures in the notebook"
                )

        def showtraceback(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.cancelling and isinstance(sys.exc_info()[1], KeyboardInterrupt):
                return
            super().showtraceback(*args, **kwargs)

        def system_piped(self, cmd: str) -> None:
            """``!cmd``: its output, stdout and stderr merged, streams line by line.

            IPython's own version reads through a pty with pexpect, which loses the
            output of a fast command now and then; a pipe loses nothing.
            """
            if cmd.rstrip().endswith("&"):
                raise OSError("Background processes not supported.")
            expanded = self.var_expand(cmd, depth=1)
            shell = os.environ.get("SHELL") or "/bin/sh"
            with subprocess.Popen(
                expanded,
                shell=True,
                executable=shell,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            ) as proc:
                assert proc.stdout is not None
                try:
                    for line in proc.stdout:
                        sys.stdout.write(line.decode("utf-8", "replace"))
                except KeyboardInterrupt:
                    proc.kill()
                    raise
            self.user_ns["_exit_code"] = proc.returncode

        system = system_piped

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "Linux"
    config.InteractiveShell.autocall = 0
    return RunnerShell.instance(config=config)
