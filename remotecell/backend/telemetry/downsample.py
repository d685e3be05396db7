"""Downsampling a job's telemetry for storage: one aggregate sample per interval.

Runners sample every 0.5 s and followers see every sample; storing them all would cost
7,200 rows per GPU job hour for no reader's benefit. The control plane keeps one sample
per ``interval`` instead, aggregated so that what a summary reads stays right: rates
(CPU, GPU utilisation, power, SM clock) are averaged over the interval, while memory and
temperature keep their peak, so "peak memory" over stored samples is the true peak.

Pure: samples in, aggregates out, no clock and no I/O.

    samples = Downsampler(interval=5.0)
    for time, metrics in readings:
        done = samples.add(time, metrics)
        if done is not None:
            store.add_metrics(job_id, *done)
    last = samples.flush()
"""

from __future__ import annotations

from dataclasses import dataclass, field

from remotecell._proto import pb

__all__ = ["DEFAULT_INTERVAL", "Downsampler", "aggregate"]

#: Seconds of readings that one stored sample stands for.
DEFAULT_INTERVAL = 5.0

_MEAN = ("utilization", "power_w", "sm_clock_mhz")
_PEAK = ("memory_used", "temperature_c")
_LAST = ("memory_total",)
_INTEGRAL = {"utilization", "sm_clock_mhz", "memory_used", "temperature_c", "memory_total"}


def aggregate(samples: list[pb.Metrics]) -> pb.Metrics:
    """One reading standing for ``samples`` (oldest first): means of rates, peaks of
    memory and temperature, and the last of totals. A GPU reading absent from some
    samples is aggregated over the samples that have it."""
    out = pb.Metrics(
        cpu_percent=sum(m.cpu_percent for m in samples) / len(samples),
        ram_used=max(m.ram_used for m in samples),
        ram_total=samples[-1].ram_total,
    )
    by_uuid: dict[str, list[pb.GPUMetric]] = {}
    for m in samples:
        for gpu in m.gpus:
            by_uuid.setdefault(gpu.uuid, []).append(gpu)
    for uuid, readings in by_uuid.items():
        gpu = out.gpus.add(uuid=uuid)
        for name in (*_MEAN, *_PEAK, *_LAST):
            values = [getattr(r, name) for r in readings if r.HasField(name)]  # type: ignore[arg-type]
            if not values:
                continue
            if name in _MEAN:
                value: float = sum(values) / len(values)
            elif name in _PEAK:
                value = max(values)
            else:
                value = values[-1]
            setattr(gpu, name, round(value) if name in _INTEGRAL else value)
    return out


@dataclass
class Downsampler:
    """Groups one job's readings into intervals and aggregates each one when it closes.

    An interval opens at its first reading and closes with the first reading
    ``interval`` seconds or more after it; the aggregate is stamped with the time of
    its last reading.
    """

    interval: float = DEFAULT_INTERVAL
    _start: float = 0.0
    _last: float = 0.0
    _pending: list[pb.Metrics] = field(default_factory=list)

    def add(self, time: float, metrics: pb.Metrics) -> tuple[float, pb.Metrics] | None:
        """Takes a reading; returns the interval it closed (time, aggregate), if any."""
        done = None
        if self._pending and time - self._start >= self.interval:
            done = self.flush()
        if not self._pending:
            self._start = time
        self._pending.append(metrics)
        self._last = time
        return done

    def flush(self) -> tuple[float, pb.Metrics] | None:
        """The open interval's aggregate (at the job's end), or None when it is empty."""
        if not self._pending:
            return None
        done = (self._last, aggregate(self._pending))
        self._pending = []
        return done
