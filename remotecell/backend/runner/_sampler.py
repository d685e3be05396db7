"""Telemetry while a cell runs: CPU and RAM (psutil) and the runner's GPUs (NVML).

A sampler thread reads every ``interval`` seconds, from the cell's start to its end, and
emits each reading as a ``metrics`` event. CPU and RAM are the runner process and its
children (what the cell runs); RAM total is the machine's. GPUs are the ones the runner
was started with, by UUID; without NVML a runner reports none, and a GPU NVML stops
answering ends GPU readings for that cell while CPU and RAM go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import psutil

from remotecell._proto import pb
from remotecell.backend.gpus import inventory

log = logging.getLogger(__name__)

#: Seconds between readings.
INTERVAL = 0.5

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
        self._children: dict[int, psutil.Process] = {}
        self._inventory: inventory.Inventory | None = None
        self._handles: list[inventory.GPUHandle] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
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
        self.stop()
        self._stop = threading.Event()
        self._process.cpu_percent()  # the first reading of a process is always 0: prime it
        self._thread = threading.Thread(
            target=self._run, args=(emit, self._stop), name="remotecell-sampler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ends the current cell's sampling and waits for the thread (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def close(self) -> None:
        self.stop()
        if self._inventory is not None:
            self._inventory.close()

    def read(self) -> pb.Metrics:
        """One reading."""
        cpu, ram = self._cpu_and_ram()
        metrics = pb.Metrics(cpu_percent=cpu, ram_used=ram, ram_total=psutil.virtual_memory().total)
        for s in self._gpu_samples():
            gpu = metrics.gpus.add(uuid=s.uuid)
            for name in _GPU_READINGS:  # a reading the card does not support stays unset
                value = getattr(s, name)
                if value is not None:
                    setattr(gpu, name, value)
        return metrics

    def _run(self, emit: Emit, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                metrics = self.read()
            except Exception:  # telemetry must never take the cell down
                log.exception("sampling failed; no more metrics for this cell")
                return
            if stop.is_set():
                return
            emit(metrics)
            stop.wait(self.interval)

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
        return cpu, ram

    def _gpu_samples(self) -> list[inventory.GPUSample]:
        if not self._handles or self._inventory is None:
            return []
        try:
            return inventory.sample(self._handles)
        except self._inventory.nvml.NVMLError as err:
            log.warning("no more GPU metrics from this runner: NVML failed (%s)", err)
            self._handles = []
            return []
