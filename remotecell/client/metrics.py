"""A job's telemetry as the notebook keeps it: the last reading and a running summary.

Fed with the ``metrics`` events of a job, in order; the job monitor and the end-of-job
summary read it.

    summary = MetricsSummary()
    for event in events:
        if event.HasField("metrics"):
            summary.add(event.metrics)
    summary.peak_ram_used, summary.gpus["GPU-..."].peak_memory_used
"""

from __future__ import annotations

from dataclasses import dataclass, field

from remotecell._proto import pb

__all__ = ["GPUSummary", "MetricsSummary"]


@dataclass
class GPUSummary:
    """One GPU over a job: peak memory (bytes) and mean utilisation (percent)."""

    uuid: str
    peak_memory_used: int = 0
    memory_total: int = 0
    _utilization_sum: float = 0.0
    _utilization_count: int = 0

    @property
    def mean_utilization(self) -> float | None:
        """None where the card reported no utilisation."""
        if not self._utilization_count:
            return None
        return self._utilization_sum / self._utilization_count


@dataclass
class MetricsSummary:
    """The last reading of a job and what its readings add up to."""

    last: pb.Metrics | None = None
    samples: int = 0
    peak_ram_used: int = 0
    peak_cpu_percent: float = 0.0
    _cpu_sum: float = 0.0
    gpus: dict[str, GPUSummary] = field(default_factory=dict)

    @property
    def mean_cpu_percent(self) -> float | None:
        return self._cpu_sum / self.samples if self.samples else None

    def add(self, metrics: pb.Metrics) -> None:
        self.last = metrics
        self.samples += 1
        self._cpu_sum += metrics.cpu_percent
        self.peak_cpu_percent = max(self.peak_cpu_percent, metrics.cpu_percent)
        self.peak_ram_used = max(self.peak_ram_used, metrics.ram_used)
        for gpu in metrics.gpus:
            summary = self.gpus.setdefault(gpu.uuid, GPUSummary(gpu.uuid))
            if gpu.HasField("memory_used"):
                summary.peak_memory_used = max(summary.peak_memory_used, gpu.memory_used)
            if gpu.HasField("memory_total"):
                summary.memory_total = gpu.memory_total
            if gpu.HasField("utilization"):
                summary._utilization_sum += gpu.utilization
                summary._utilization_count += 1
