"""Prometheus exposition of the control plane: per-GPU and per-job gauges.

Read at scrape time from the controller (no background loop): the machine's GPUs and
who holds them, each running job's newest telemetry reading, its GPUs, run time and
estimated cost, and the queue; and from the deployment manager, each endpoint's calls
by status, their latency, and its replicas. Served at ``/metrics`` by the HTTP gateway, behind the
control plane's token.

    # prometheus.yml
    scrape_configs:
      - job_name: remotecell
        static_configs: [{targets: ["127.0.0.1:9464"]}]
        authorization: {credentials_file: /home/me/.local/share/remotecell/token}
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from remotecell._proto import pb
from remotecell.backend.deployments.manager import BUCKETS

if TYPE_CHECKING:
    from remotecell.backend.controller import Controller
    from remotecell.backend.deployments.manager import DeploymentManager

__all__ = ["ControlPlaneCollector", "DeploymentCollector", "metrics_endpoint"]

_GPU_READINGS = (
    ("utilization", "remotecell_gpu_utilization_percent", "GPU utilisation, percent", 1.0),
    ("memory_used", "remotecell_gpu_memory_used_bytes", "GPU memory in use, bytes", 1.0),
    ("power_w", "remotecell_gpu_power_watts", "GPU power draw, watts", 1.0),
    ("temperature_c", "remotecell_gpu_temperature_celsius", "GPU temperature, Celsius", 1.0),
    ("sm_clock_mhz", "remotecell_gpu_sm_clock_hertz", "GPU SM clock, hertz", 1e6),
)
_GPU_LABELS = ["uuid", "index", "type", "runner", "job"]
_JOB_LABELS = ["job", "runner", "gpu_type"]


class ControlPlaneCollector:
    """A prometheus_client collector over a live :class:`Controller`."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        c = self.controller
        runners, running, queued = c.counts()
        yield _gauge("remotecell_runners", "Runners started and not yet gone", runners)
        jobs = GaugeMetricFamily("remotecell_jobs", "Jobs by state", labels=["state"])
        jobs.add_metric(["running"], running)
        jobs.add_metric(["queued"], queued)
        yield jobs
        yield from self._gpus()
        yield from self._jobs()

    def _gpus(self) -> Iterator[Metric]:
        c = self.controller
        holders = c.scheduler.gpu_holders()
        # The newest reading of each GPU, from the job running on the runner holding it.
        readings: dict[str, pb.GPUMetric] = {}
        for job in c.jobs.values():
            if job.state == pb.RUNNING and job.last_metrics is not None:
                for sample in job.last_metrics.metrics.gpus:
                    readings[sample.uuid] = sample
        info = InfoMetricFamily(
            "remotecell_gpu", "The machine's GPUs", labels=["uuid", "index", "type", "name"]
        )
        total = GaugeMetricFamily(
            "remotecell_gpu_memory_total_bytes", "GPU memory, bytes", labels=["uuid", "type"]
        )
        busy = GaugeMetricFamily(
            "remotecell_gpu_busy", "1 while a runner holds the GPU", labels=_GPU_LABELS
        )
        families = {
            field: GaugeMetricFamily(name, doc, labels=_GPU_LABELS)
            for field, name, doc, _ in _GPU_READINGS
        }
        for gpu in c.scheduler.config.gpus:
            runner_id = holders.get(gpu.uuid, "")
            job_id = c.lifecycle.runner_job(runner_id) if runner_id else ""
            labels = [gpu.uuid, str(gpu.index), gpu.type, runner_id, job_id]
            info.add_metric([gpu.uuid, str(gpu.index), gpu.type, gpu.name], {})
            total.add_metric([gpu.uuid, gpu.type], gpu.memory_total)
            busy.add_metric(labels, 1.0 if runner_id else 0.0)
            reading = readings.get(gpu.uuid)
            if reading is None:
                continue
            for field, _, _, scale in _GPU_READINGS:
                if reading.HasField(field):  # type: ignore[arg-type]
                    families[field].add_metric(labels, getattr(reading, field) * scale)
        yield info
        yield total
        yield busy
        yield from families.values()

    def _jobs(self) -> Iterator[Metric]:
        now = time.time()
        cpu = GaugeMetricFamily(
            "remotecell_job_cpu_percent",
            "CPU use of a job's runner (100 = one core)",
            labels=_JOB_LABELS,
        )
        ram = GaugeMetricFamily(
            "remotecell_job_ram_used_bytes", "Resident memory of a job's runner", labels=_JOB_LABELS
        )
        gpus = GaugeMetricFamily(
            "remotecell_job_gpus", "GPUs a running job holds", labels=_JOB_LABELS
        )
        seconds = GaugeMetricFamily(
            "remotecell_job_running_seconds", "How long a job's attempt has run", labels=_JOB_LABELS
        )
        cost = GaugeMetricFamily(
            "remotecell_job_cost_usd",
            "Estimated cost of a job's attempt so far, at the configured GPU prices",
            labels=_JOB_LABELS,
        )
        for job in self.controller.jobs.values():
            if job.state != pb.RUNNING:
                continue
            labels = [job.id, job.runner_id, job.gpu_type]
            gpus.add_metric(labels, job.gpu_count)
            elapsed = max(0.0, now - job.started) if job.started else 0.0
            seconds.add_metric(labels, elapsed)
            if job.price is not None:
                cost.add_metric(labels, job.price * elapsed)
            if job.last_metrics is not None:
                cpu.add_metric(labels, job.last_metrics.metrics.cpu_percent)
                ram.add_metric(labels, job.last_metrics.metrics.ram_used)
        yield from (cpu, ram, gpus, seconds, cost)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class DeploymentCollector:
    """Per-endpoint request counts by status, a latency histogram, and replica, queue
    and in-flight gauges, from a live :class:`DeploymentManager`."""

    def __init__(self, manager: DeploymentManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "remotecell_endpoint_requests",
            "Calls of a deployment answered, by HTTP status",
            labels=["endpoint", "status"],
        )
        latency = HistogramMetricFamily(
            "remotecell_endpoint_latency_seconds",
            "Time from a call's arrival to its answer's end",
            labels=["endpoint"],
        )
        replicas = GaugeMetricFamily(
            "remotecell_endpoint_replicas",
            "A deployment's replicas by state",
            labels=["endpoint", "state"],
        )
        queued = GaugeMetricFamily(
            "remotecell_endpoint_queued_calls", "Calls waiting for a replica", labels=["endpoint"]
        )
        in_flight = GaugeMetricFamily(
            "remotecell_endpoint_in_flight_calls", "Calls a replica is running", labels=["endpoint"]
        )
        for name, stats, views, waiting, running in self.manager.metrics():
            for status, count in sorted(stats.by_status.items()):
                requests.add_metric([name, str(status)], count)
            cumulative, buckets = 0, []
            for bound, count in zip([*BUCKETS, math.inf], stats.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == math.inf else str(bound), cumulative))
            latency.add_metric([name], buckets, stats.latency_sum)
            for state in ("starting", "ready", "draining"):
                replicas.add_metric([name, state], sum(v.state == state for v in views))
            queued.add_metric([name], waiting)
            in_flight.add_metric([name], running)
        yield from (requests, latency, replicas, queued, in_flight)


def metrics_endpoint(
    controller: Controller, deployments: DeploymentManager | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """The ``/metrics`` handler: Prometheus text exposition of ``controller`` and the
    deployed endpoints."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(controller))  # type: ignore[arg-type]
    if deployments is not None:
        registry.register(DeploymentCollector(deployments))  # type: ignore[arg-type]

    async def endpoint(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint
