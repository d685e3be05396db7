"""Telemetry from a real runner: metrics events while a cell runs, CPU/RAM always, and the
runner's own GPUs where the machine has some (recorded cards: NVML is the only fake)."""

from __future__ import annotations

import pytest

from remotecell._proto import pb
from remotecell.backend.gpus._recorded import machine
from remotecell.client.metrics import MetricsSummary

H100 = "NVIDIA H100 80GB HBM3"


def events_of(client, spec):
    return list(client.submit(spec))


def running_part(events):
    """The events from the cell's start to its end (the runner's status to `finished`)."""
    kinds = [e.WhichOneof("body") for e in events]
    return events[kinds.index("status") : kinds.index("finished")]


def test_a_cpu_job_reports_cpu_and_ram_while_it_runs(client):
    events = events_of(client, pb.JobSpec(code="import time\nx = [0] * 10**6\ntime.sleep(1.2)"))
    assert events[-1].finished.state == pb.SUCCEEDED
    metrics = [e.metrics for e in events if e.HasField("metrics")]
    assert metrics, "no metrics events"
    assert [e.metrics for e in running_part(events) if e.HasField("metrics")] == metrics
    for m in metrics:
        assert 0 < m.ram_used < m.ram_total
        assert m.cpu_percent >= 0
        assert list(m.gpus) == []
    # They are stored with the job: attaching later replays them.
    replayed = [e.metrics for e in client.attach(events[0].job_id) if e.HasField("metrics")]
    assert replayed == metrics


def test_a_gpu_job_reports_its_own_gpu(make_control_plane, monkeypatch):
    monkeypatch.setenv("REMOTECELL_FAKE_NVML", f"{H100},Tesla T4")
    cards = machine(H100, "Tesla T4")
    control_plane = make_control_plane()
    client = control_plane.client()
    try:
        spec = pb.JobSpec(
            code="import time\ntime.sleep(0.6)",
            resources=pb.Resources(gpu=[pb.GPUChoice(type="T4", count=1)]),
        )
        events = events_of(client, spec)
    finally:
        client.close()
    assert events[-1].finished.state == pb.SUCCEEDED
    summary = MetricsSummary()
    for e in events:
        if e.HasField("metrics"):
            summary.add(e.metrics)
    assert summary.samples >= 1
    (gpu,) = summary.last.gpus
    assert gpu.uuid == cards[1].uuid  # the T4 it holds, not the H100
    assert gpu.memory_total == cards[1].memory_total
    assert gpu.HasField("utilization") and gpu.HasField("temperature_c")
    assert summary.gpus[gpu.uuid].peak_memory_used == cards[1].memory_used
    assert summary.gpus[gpu.uuid].mean_utilization == pytest.approx(cards[1].utilization)
