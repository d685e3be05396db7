"""Telemetry while a cell runs: CPU and RAM (psutil) and the runner's GPUs (NVML).

One sampler thread, for the runner's life, reads every ``interval`` seconds while a cell
runs and emits each reading as a ``metrics`` event. The first reading comes one interval
after the cell starts, so CPU use is measured over a whole interval, and a cell shorter
than that costs no reading: starting a cell only wakes the thread (starting a thread
and reading /proc at each cell's start cost a trivial cell ~0.5 ms on the runner).
CPU and RAM are the runner process and its children (what the cell runs); RAM total is
the machine's. GPUs are the ones the runner was started with, by UUID; without NVML a
runner reports none, and a GPU NVML stops answering ends GPU readings for that cell
while CPU and RAM go on.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence

import psutil

from remotecell._proto import pb
from remotecell.backend.gpus import inventory

log = logging.getLogger(__name__)

#: Seconds between readings.
INTERVAL = 0.5
#: The interpreter's switch interval while a reading is taken (see ``Sampler.read``).
READ_SWITCH_INTERVAL = 0.0002

Emit = Callable[[pb.Metrics], None]


#: The GPUSample fields copied into a GPUMetric (optional there: NVML may not report them).
_GPU_READINGS = (
    "utilization",
    "memory_used",
    "memory_total",
    "power_w",
    "temperature_c",
    "sm_clock_mhz",
)


class Sampler:
    """Samples for the runner's life; :meth:`watch` covers one cell."""

    def __init__(self, gpu_uuids: Sequence[str] = (), interval: float = INTERVAL) -> None:
        self.interval = interval
        self._process = psutil.Process()
        self._cpu_bound = 100.0 * (psutil.cpu_count() or 1)  # 100 = one core, as psutil counts
        self._children: dict[int, psutil.Process] = {}
        self._inventory: inventory.Inventory | None = None
        self._handles: list[inventory.GPUHandle] = []
        self._thread: threading.Thread | None = None
        #: Guards the three below; notified when a cell starts or stops, or on close.
        self._changed = threading.Condition()
        self._emit: Emit | None = None  # where the current cell's readings go
        self._cell = 0  # counts starts and stops: a reading is for the cell it began in
        self._closed = False
        if gpu_uuids:
            try:
                self._inventory = inventory.load()
                self._handles = self._inventory.handles(gpu_uuids)
            except (inventory.NVMLUnavailable, KeyError) as err:
                log.warning("no GPU metrics: %s", err)
                self._handles = []

    def watch(self, emit: Emit) -> None:
        """Starts sampling into ``emit`` for a cell; ``stop()`` before its ``finished``
        event, so that no reading comes after it."""
        with self._changed:
            self._emit = emit
            self._cell += 1
            self._changed.notify()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="remotecell-sampler", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Ends the current cell's sampling: no reading is emitted once it returns
        (idempotent; it does not wait for a reading under way)."""
        with self._changed:
            if self._emit is not None:
                self._emit = None
                self._cell += 1
                self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._emit = None
            self._closed = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._inventory is not None:
            self._inventory.close()

    def read(self) -> pb.Metrics:
        """One reading."""
        # A reading is many small /proc reads, each giving up the GIL and waiting to get it
        # back from a busy cell (up to the switch interval, 5 ms, each time): 0.4 s for a
        # reading that takes 1 ms on an idle runner. A short switch interval while reading
        # gets it back sooner; the cell loses a little time, for a few milliseconds.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(READ_SWITCH_INTERVAL)
        try:
            cpu, ram = self._cpu_and_ram()
        finally:
            sys.setswitchinterval(interval)
        metrics = pb.Metrics(cpu_percent=cpu, ram_used=ram, ram_total=psutil.virtual_memory().total)
        for s in self._gpu_samples():
            gpu = metrics.gpus.add(uuid=s.uuid)
            for name in _GPU_READINGS:  # a reading the card does not support stays unset
                value = getattr(s, name)
                if value is not None:
                    setattr(gpu, name, value)
        return metrics

    def _run(self) -> None:
        failed = -1  # the cell whose sampling failed: no more readings for it
        while True:
            with self._changed:
                while not self._closed and (self._emit is None or self._cell == failed):
                    self._changed.wait()
                if self._closed:
                    return
                cell = self._cell
            self._process.cpu_percent()  # CPU use is measured from here
            if not self._sample(cell):
                failed = cell

    def _sample(self, cell: int) -> bool:
        """Reads every interval while ``cell`` runs; False when reading failed."""
        while True:
            with self._changed:
                deadline = time.monotonic() + self.interval
                while not self._closed and self._cell == cell:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                if self._closed or self._cell != cell:
                    return True
            try:
                metrics = self.read()
            except Exception:  # telemetry must never take the cell down
                log.exception("sampling failed; no more metrics for this cell")
                return False
            with self._changed:
                if self._cell != cell or self._emit is None:
                    return True
                self._emit(metrics)

    def _cpu_and_ram(self) -> tuple[float, int]:
        cpu = self._process.cpu_percent()
        ram = self._process.memory_info().rss
        alive: dict[int, psutil.Process] = {}
        try:
            children = self._process.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            # Keep each child's Process object: cpu_percent is measured since the last call.
            proc = self._children.get(child.pid, child)
            try:
                cpu += proc.cpu_percent()
                ram += proc.memory_info().rss
            except psutil.Error:
                continue
            alive[child.pid] = proc
        self._children = alive
        # psutil divides by the wall time between two readings: a sliver of it (a reading
        # right after another) can make any rate, so none may pass what the cores allow.
        return min(cpu, self._cpu_bound), ram

    def _gpu_samples(self) -> list[inventory.GPUSample]:
        if not self._handles or self._inventory is None:
            return []
        try:
            return inventory.sample(self._handles)
        except self._inventory.nvml.NVMLError as err:
            log.warning("no more GPU metrics from this runner: NVML failed (%s)", err)
            self._handles = []
            return []
