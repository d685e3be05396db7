"""The job monitor's place in a cell's output, in the notebook's monitor mode.

``"full"``: the ``JobMonitor`` widget (sparklines, and a summary at the end).
``"compact"``: one line of text, updated in place (where the job is, its time, CPU and
RAM; at the end the same line as a summary); no widget, no sparklines.
``"off"``: nothing, and no status lines either: the cell's saved outputs are those of
the same cell run locally.

The monitor is the cell's first output and never disturbs the cell's own: it changes
only by ``update_display_data``, which neither moves it nor fires a pending
``clear_output(wait=True)``. When the cell clears its output, the monitor comes back at
once after a clear without wait; after ``clear_output(wait=True)`` only just before the
cell's next output (the front end clears, then shows both), so a clear that the cell's
last output was waiting on never fires and that output stays, as it does locally.
"""

from __future__ import annotations

import time
from typing import Any

from remotecell.kernel_magics._options import MONITOR_MODES
from remotecell.widgets._monitor_state import MonitorState, Throttle

MODES = MONITOR_MODES
#: Seconds between two updates of the compact line at most.
LINE_INTERVAL = 1.0


class MonitorView:
    """Shows ``progress`` (the job's ``MonitorState``) in the cell, in ``mode``."""

    def __init__(self, mode: str, progress: MonitorState, display_id: str) -> None:
        self.mode = mode
        self.progress = progress
        self.display_id = display_id
        #: The JobMonitor widget ("full") or the line's text ("compact"), once shown.
        self.shown: Any = None
        self._tried = False
        self._hidden = False  # cleared by the cell, to come back before its next output
        self._throttle = Throttle(LINE_INTERVAL)

    @property
    def quiet(self) -> bool:
        """Whether the plain status lines are left out ("off", or a monitor says it)."""
        return self.mode == "off" or self.shown is not None

    def show(self) -> None:
        """Shows the monitor, once, where a front end can: in a Jupyter kernel (a terminal
        IPython keeps the plain status lines)."""
        if self._tried or self.mode == "off":
            return
        self._tried = True
        from IPython import get_ipython

        if getattr(get_ipython(), "kernel", None) is None:
            return
        if self.mode == "compact":
            self.shown = self._line()
        else:
            try:
                from remotecell.widgets import JobMonitor
            except ImportError:  # anywidget missing from this kernel: the status lines remain
                return
            self.shown = JobMonitor(self.progress)
        self._display()

    def cleared(self, wait: bool) -> None:
        """The cell cleared its output, monitor included."""
        if self.shown is None:
            return
        if wait:
            self._hidden = True
        else:
            self._display()

    def before_output(self) -> None:
        """The cell is about to show something (not an update of a display)."""
        if self._hidden:
            self._hidden = False
            self._display()

    def tick(self) -> None:
        if self.shown is None:
            return
        if self.mode == "full":
            self.shown.tick()
        elif self._throttle.due(time.monotonic()):
            self._update()

    def end(self) -> None:
        """The job ended: the final state, and the final text for front ends that keep only
        text (nbclient records a display's text/plain, and updates it on update_display)."""
        if self.shown is None:
            return
        if self.mode == "full":
            from IPython.display import update_display

            self.shown.flush()
            update_display(self.shown, display_id=self.display_id)
        else:
            self._update()

    def flush(self) -> None:
        if self.mode == "full" and self.shown is not None:
            self.shown.flush()

    def _line(self) -> str:
        lines = self.progress.text(time.time()).splitlines()
        return " · ".join(line.strip() for line in lines)

    def _display(self) -> None:
        from IPython.display import display, publish_display_data

        if self.mode == "full":
            display(self.shown, display_id=self.display_id)
        else:
            publish_display_data({"text/plain": self.shown}, transient=self._transient())

    def _update(self) -> None:
        from IPython.display import publish_display_data

        line = self._line()
        if line != self.shown:
            self.shown = line
            publish_display_data({"text/plain": line}, transient=self._transient(), update=True)

    def _transient(self) -> dict[str, str]:
        return {"display_id": self.display_id}
