"""``JobMonitor``: a job's live monitor in its cell's output."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anywidget
import traitlets as t

from remotecell._proto import pb
from remotecell.widgets._monitor_state import MonitorState, Throttle
from remotecell.widgets._static import css, esm

#: Seconds between two syncs to the browser at most: a fast job must not flood iopub.
SYNC_INTERVAL = 0.25


class JobMonitor(anywidget.AnyWidget):  # type: ignore[misc]
    """Where a job is and what it uses: per GPU utilisation, memory, power and temperature
    (CPU and RAM for a CPU-only job) as sparklines, elapsed time, runner, GPU-seconds and
    estimated cost; while it waits, why; at its end, a summary.

    Fed with the job's events in order; traits sync at most every ``sync_interval`` seconds,
    and :meth:`flush` syncs now.

    Example:
        >>> monitor = JobMonitor()
        >>> for event in client.attach(job_id):  # doctest: +SKIP
        ...     monitor.add(event)
        >>> monitor.flush()                      # doctest: +SKIP
    """

    _esm = esm("monitor.js")
    _css = css()

    job_id = t.Unicode("").tag(sync=True)
    #: "starting", "waiting", "running" or "finished".
    phase = t.Unicode("starting").tag(sync=True)
    #: Once finished: "succeeded", "failed" or "cancelled".
    state = t.Unicode("").tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    runner_id = t.Unicode("").tag(sync=True)
    attempt = t.Int(0).tag(sync=True)
    gpu_type = t.Unicode("").tag(sync=True)
    gpu_count = t.Int(0).tag(sync=True)
    elapsed = t.Float(0.0).tag(sync=True)
    waited = t.Float(0.0).tag(sync=True)
    gpu_seconds = t.Float(0.0).tag(sync=True)
    cost_usd = t.Float(None, allow_none=True).tag(sync=True)
    #: Seconds since the job started running, one per reading in the window.
    times = t.List(t.Float()).tag(sync=True)
    cpu_percent = t.List(t.Float()).tag(sync=True)
    ram_used = t.List(t.Int()).tag(sync=True)
    ram_total = t.Int(0).tag(sync=True)
    #: Per GPU: uuid, label, name, memory_total and series aligned with ``times``.
    gpus = t.List(t.Dict()).tag(sync=True)
    #: Once finished: elapsed, GPU-seconds, cost, peak memory and mean utilisation.
    summary = t.Dict().tag(sync=True)

    def __init__(
        self,
        data: MonitorState | None = None,
        *,
        sync_interval: float = SYNC_INTERVAL,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        #: What the monitor shows, as data; whoever holds it may feed it events directly
        #: and call :meth:`tick` (the notebook's job follower does).
        self.data = data if data is not None else MonitorState()
        self._clock = clock
        self._throttle = Throttle(sync_interval)
        # The comm opens with the state as it is, not with defaults and then an update.
        super().__init__(**{**self.data.snapshot(clock()), **kwargs})

    def add(self, event: pb.JobEvent) -> None:
        """Takes one of the job's events; syncs if the last sync is old enough."""
        self.data.add(event)
        self.tick()

    def tick(self) -> None:
        """Syncs if the last sync is old enough (elapsed time moves on between events)."""
        if self._throttle.due(self._clock()):
            self._sync()

    def flush(self) -> None:
        """Syncs now (the job's end)."""
        self._throttle.due(self._clock())
        self._sync()

    def _sync(self) -> None:
        snapshot = self.data.snapshot(self._clock())
        with self.hold_sync():
            for name, value in snapshot.items():
                setattr(self, name, value)

    def __repr__(self) -> str:
        return self.data.text(self._clock())
