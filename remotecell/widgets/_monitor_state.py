"""A job's monitor as data: the job's events in, what the job monitor shows out.

No widget here. ``JobMonitor`` syncs :meth:`MonitorState.snapshot` to the browser and shows
:meth:`MonitorState.text` to front ends without widgets; both read the same state.

    state = MonitorState()
    for event in events:          # pb.JobEvent, in order
        state.add(event)
    view = state.snapshot(now=time.time())
    view["phase"], view["gpu_seconds"], view["gpus"][0]["utilization"]
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from remotecell._proto import pb
from remotecell.client.metrics import MetricsSummary
from remotecell.contract.resources import price_per_second

__all__ = ["WINDOW", "MonitorState", "Throttle", "format_bytes", "format_money", "format_seconds"]

#: Readings kept for the sparklines: a minute of live ones (one every 0.5 s).
WINDOW = 120

_FINAL_STATES = {pb.SUCCEEDED: "succeeded", pb.FAILED: "failed", pb.CANCELLED: "cancelled"}


@dataclass
class _GPUName:
    name: str
    gpu_type: str


class MonitorState:
    """One job's monitor: where the job is, its readings over a window, what it has cost.

    Times are the events' own (unix seconds), so a job replayed after ``%remote_attach``
    shows the durations it had; ``now`` only extends a job that has not ended yet.
    """

    def __init__(self, window: int = WINDOW) -> None:
        self.job_id = ""
        #: "starting" (nothing heard yet), "waiting", "running" or "finished".
        self.phase = "starting"
        #: The final state ("succeeded", "failed", "cancelled") once finished.
        self.state = ""
        self.message = ""
        self.runner_id = ""
        self.attempt = 0
        self.gpu_type = ""
        self.gpu_count = 0
        self.configured_price: float | None = None
        #: Peak memory and mean use over the whole job (not only the window).
        self.metrics = MetricsSummary()
        self._samples: collections.deque[tuple[float, pb.Metrics]] = collections.deque(
            maxlen=window
        )
        self._gpu_order: dict[str, None] = {}  # uuids, in the order first seen
        self._names: dict[str, _GPUName] = {}
        self._origin: float | None = None  # time 0 of the series: when it first ran
        self._waiting_since: float | None = None
        self._run_start: float | None = None
        self._run_total = 0.0
        self._last_time = 0.0

    # -- events in -------------------------------------------------------------------

    def add(self, event: pb.JobEvent) -> None:
        """Takes one event of the job; events that change nothing shown are ignored."""
        if event.job_id:
            self.job_id = event.job_id
        when = event.time
        self._last_time = max(self._last_time, when)
        kind = event.WhichOneof("body")
        if kind == "accepted":
            if self.phase == "starting":
                self._wait(when, "queued")
        elif kind == "status":
            self._status(event.status, when)
        elif kind == "metrics":
            self._metrics(event.metrics, when)
        elif kind == "finished":
            self._finished(event.finished, when)

    def name_gpus(self, names: dict[str, tuple[str, str]]) -> None:
        """Model names and types of GPUs by uuid (from the control plane's inventory)."""
        for uuid, (name, gpu_type) in names.items():
            self._names[uuid] = _GPUName(name, gpu_type)

    def unnamed_gpus(self) -> list[str]:
        """The uuids of this job's GPUs that have no model name yet."""
        return [uuid for uuid in self._gpu_order if uuid not in self._names]

    def _wait(self, when: float, message: str) -> None:
        self.phase = "waiting"
        self.message = message
        if self._waiting_since is None:
            self._waiting_since = when

    def _status(self, status: pb.Status, when: float) -> None:
        self.attempt = status.attempt
        if status.state == pb.RUNNING:
            if self._run_start is None:
                self._run_start = when
            if self._origin is None:
                self._origin = when
            self.phase = "running"
            self.message = status.message
            self.runner_id = status.runner_id
            self._waiting_since = None
            if status.gpu_type:
                self.gpu_type = status.gpu_type
                self.gpu_count = status.gpu_count
            if status.HasField("price_per_second"):
                self.configured_price = status.price_per_second
        elif status.state == pb.QUEUED:
            if self.phase == "running":  # a retry: it waits again, from now
                self._stop_running(when)
                self._waiting_since = None
            self._wait(when, status.message)

    def _metrics(self, metrics: pb.Metrics, when: float) -> None:
        if self.phase in ("starting", "waiting"):
            # Readings mean it runs, even where the running status was not seen.
            self.phase = "running"
            self._waiting_since = None
            if self._run_start is None:
                self._run_start = when
        if self._origin is None:
            self._origin = when
        self.metrics.add(metrics)
        self._samples.append((when, metrics))
        for gpu in metrics.gpus:
            self._gpu_order.setdefault(gpu.uuid, None)

    def _finished(self, finished: pb.Finished, when: float) -> None:
        self._stop_running(when)
        self._waiting_since = None
        self.phase = "finished"
        self.state = _FINAL_STATES.get(finished.state, "failed")
        self.message = finished.message

    def _stop_running(self, when: float) -> None:
        if self._run_start is not None:
            self._run_total += max(0.0, when - self._run_start)
            self._run_start = None

    # -- what it adds up to ------------------------------------------------------------

    def _now(self, now: float) -> float:
        # The kernel's clock may lag the control plane's a little: never go backwards.
        return max(now, self._last_time)

    def elapsed(self, now: float) -> float:
        """Seconds the job has run (all attempts)."""
        running = self._now(now) - self._run_start if self._run_start is not None else 0.0
        return self._run_total + running

    def waited(self, now: float) -> float:
        """Seconds the job has waited in the queue this time (0 unless waiting)."""
        if self._waiting_since is None:
            return 0.0
        return self._now(now) - self._waiting_since

    @property
    def gpus_held(self) -> int:
        """GPUs the job holds: the control plane's count, else the cards its readings name."""
        return self.gpu_count or len(self._gpu_order)

    @property
    def held_type(self) -> str:
        """The GPU type the job holds: the control plane's, else the inventory's (one type)."""
        if self.gpu_type:
            return self.gpu_type
        types = {self._names[u].gpu_type for u in self._gpu_order if u in self._names}
        return types.pop() if len(types) == 1 else ""

    def gpu_seconds(self, now: float) -> float:
        return self.gpus_held * self.elapsed(now)

    def cost_usd(self, now: float) -> float | None:
        """The estimated cost so far; None where neither the control plane nor the defaults
        price the job's GPUs (and for CPU-only jobs the control plane does not price)."""
        price = price_per_second(self.held_type, self.gpus_held, self.configured_price)
        return None if price is None else price * self.elapsed(now)

    # -- what is shown -------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything the widget shows, as JSON-ready values keyed by its trait names.

        Series are aligned with ``times`` (seconds since the job started running); a GPU
        value is None where that reading lacks it.
        """
        origin = self._origin if self._origin is not None else 0.0
        samples = list(self._samples)
        return {
            "job_id": self.job_id,
            "phase": self.phase,
            "state": self.state,
            "message": self.message,
            "runner_id": self.runner_id,
            "attempt": self.attempt,
            "gpu_type": self.held_type,
            "gpu_count": self.gpus_held,
            "elapsed": round(self.elapsed(now), 2),
            "waited": round(self.waited(now), 2),
            "gpu_seconds": round(self.gpu_seconds(now), 2),
            "cost_usd": self.cost_usd(now),
            "times": [round(t - origin, 2) for t, _ in samples],
            "cpu_percent": [round(m.cpu_percent, 1) for _, m in samples],
            "ram_used": [m.ram_used for _, m in samples],
            "ram_total": samples[-1][1].ram_total if samples else 0,
            "gpus": [self._gpu_series(i, uuid, samples) for i, uuid in enumerate(self._gpu_order)],
            "summary": self._summary(now) if self.phase == "finished" else {},
        }

    def _label(self, index: int, uuid: str) -> tuple[str, str]:
        named = self._names.get(uuid)
        return f"GPU {index}", named.name if named else self.gpu_type

    def _gpu_series(
        self, index: int, uuid: str, samples: list[tuple[float, pb.Metrics]]
    ) -> dict[str, Any]:
        columns: dict[str, list[Any]] = {
            "utilization": [],
            "memory_used": [],
            "power_w": [],
            "temperature_c": [],
        }
        memory_total = self.metrics.gpus[uuid].memory_total if uuid in self.metrics.gpus else 0
        for _, metrics in samples:
            reading = next((g for g in metrics.gpus if g.uuid == uuid), None)
            for name, column in columns.items():
                if reading is None or not reading.HasField(name):  # type: ignore[arg-type]
                    column.append(None)
                else:
                    value = getattr(reading, name)
                    column.append(round(value, 1) if isinstance(value, float) else value)
        label, name = self._label(index, uuid)
        return {"uuid": uuid, "label": label, "name": name, "memory_total": memory_total, **columns}

    def _summary(self, now: float) -> dict[str, Any]:
        gpus = []
        for index, uuid in enumerate(self._gpu_order):
            summary = self.metrics.gpus.get(uuid)
            if summary is None:
                continue
            label, name = self._label(index, uuid)
            mean = summary.mean_utilization
            gpus.append(
                {
                    "label": label,
                    "name": name,
                    "peak_memory_used": summary.peak_memory_used,
                    "memory_total": summary.memory_total,
                    "mean_utilization": None if mean is None else round(mean, 1),
                }
            )
        mean_cpu = self.metrics.mean_cpu_percent
        return {
            "state": self.state,
            "elapsed": round(self.elapsed(now), 2),
            "gpu_seconds": round(self.gpu_seconds(now), 2),
            "cost_usd": self.cost_usd(now),
            "samples": self.metrics.samples,
            "peak_ram_used": self.metrics.peak_ram_used,
            "peak_cpu_percent": round(self.metrics.peak_cpu_percent, 1),
            "mean_cpu_percent": None if mean_cpu is None else round(mean_cpu, 1),
            "gpus": gpus,
        }

    def text(self, now: float) -> str:
        """The monitor in plain text, for front ends without widgets (and logs)."""
        view = self.snapshot(now)
        head = f"remotecell {self.job_id or 'job'}"
        if self.phase in ("starting", "waiting"):
            waited = f" ({format_seconds(view['waited'])})" if view["waited"] >= 1 else ""
            return f"{head}: {self.message or 'submitted'}{waited}"
        where = f" on {self.runner_id}" if self.runner_id else ""
        held = f" · {view['gpu_count']}× {view['gpu_type']}" if view["gpu_type"] else ""  # noqa: RUF001
        cost = _cost_text(view)
        if self.phase == "running":
            lines = [f"{head}: running{where}{held} · {format_seconds(view['elapsed'])}{cost}"]
            last = self.metrics.last
            for gpu in view["gpus"]:
                lines.append(f"  {_gpu_now_text(gpu)}")
            if last is not None:
                lines.append(
                    f"  CPU {last.cpu_percent:.0f}% · RAM {format_bytes(last.ram_used)}"
                    f" of {format_bytes(last.ram_total)}"
                )
            return "\n".join(lines)
        summary = view["summary"]
        lines = [f"{head}: {self.state}{where}{held} in {format_seconds(summary['elapsed'])}{cost}"]
        for gpu in summary["gpus"]:
            mean = gpu["mean_utilization"]
            util = "n/a" if mean is None else f"{mean:.0f}%"
            lines.append(
                f"  {gpu['label']}{' ' + gpu['name'] if gpu['name'] else ''}: peak memory "
                f"{format_bytes(gpu['peak_memory_used'])} of {format_bytes(gpu['memory_total'])}"
                f" · mean utilisation {util}"
            )
        if summary["samples"]:
            lines.append(
                f"  peak RAM {format_bytes(summary['peak_ram_used'])}"
                f" · mean CPU {summary['mean_cpu_percent']:.0f}%"
            )
        return "\n".join(lines)


def _gpu_now_text(gpu: dict[str, Any]) -> str:
    def last(key: str) -> Any:
        values = gpu[key]
        return values[-1] if values else None

    parts = []
    util, used, power, temp = (
        last(k) for k in ("utilization", "memory_used", "power_w", "temperature_c")
    )
    if util is not None:
        parts.append(f"{util}%")
    if used is not None:
        total = gpu["memory_total"]
        parts.append(
            f"{format_bytes(used)} of {format_bytes(total)}" if total else format_bytes(used)
        )
    if power is not None:
        parts.append(f"{power:.0f} W")
    if temp is not None:
        parts.append(f"{temp} °C")
    name = f" {gpu['name']}" if gpu["name"] else ""
    return f"{gpu['label']}{name}: {' · '.join(parts) or 'no readings'}"


def _cost_text(view: dict[str, Any]) -> str:
    gpus, cost = view["gpu_count"], view["cost_usd"]
    gpu_seconds = f" · {view['gpu_seconds']:.1f} GPU-s" if gpus else ""
    if not gpus and not cost:  # a CPU-only job is free unless the control plane prices it
        return gpu_seconds
    return f"{gpu_seconds} · {'cost unknown' if cost is None else format_money(cost)}"


def format_seconds(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def format_bytes(count: float) -> str:
    """Binary units: ``512 MiB``, ``40.0 GiB``."""
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    if count >= 2**20:
        return f"{count / 2**20:.0f} MiB"
    return f"{count / 2**10:.0f} KiB"


def format_money(usd: float) -> str:
    """Cents for sums of a dollar or more, four decimals below (a minute of an H100 is $0.0658)."""
    return f"${usd:.2f}" if usd >= 1 else f"${usd:.4f}"


class Throttle:
    """Lets a sync through at most once per ``interval`` seconds of the clock it is given."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: float | None = None

    def due(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True
