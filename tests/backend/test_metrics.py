"""Telemetry from a real runner: metrics events while a cell runs, CPU/RAM always, and the
runner's own GPUs where the machine has some (recorded cards: NVML is the only fake)."""

from __future__ import annotations

import time

import pytest

from remotecell._proto import pb
from remotecell.backend.gpus._recorded import machine
from remotecell.backend.runner._sampler import Sampler
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
    # Samples are not numbered; the job's other events still are, with no gaps.
    assert {e.seq for e in events if e.HasField("metrics")} == {0}
    numbered = [e.seq for e in events if not e.HasField("metrics")]
    assert numbered == list(range(len(numbered)))


def test_the_sampler_reads_from_one_interval_into_a_cell_until_it_stops() -> None:
    readings: list[pb.Metrics] = []
    sampler = Sampler(interval=30.0)
    try:
        sampler.watch(readings.append)
        sampler.stop()
        assert readings == []  # a cell shorter than the interval costs no reading
        sampler.interval = 0.05
        sampler.watch(readings.append)
        deadline = time.monotonic() + 10
        while len(readings) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        sampler.stop()
        taken = len(readings)
        assert taken >= 2
        assert all(0 < m.ram_used < m.ram_total for m in readings)
        time.sleep(0.2)
        assert len(readings) == taken, "a reading came after stop()"
    finally:
        sampler.close()


def test_stored_samples_are_downsampled_and_replayed_in_place(make_control_plane):
    control_plane = make_control_plane("--metrics-interval", "0.9")
    client = control_plane.client()
    try:
        code = "import time\nx = []\nfor i in range(8):\n    x.append(bytearray(8 << 20))\n    time.sleep(0.3)"
        events = events_of(client, pb.JobSpec(code=code))
        assert events[-1].finished.state == pb.SUCCEEDED
        live = [e for e in events if e.HasField("metrics")]
        replay = list(client.attach(events[0].job_id))
        # From seq 2, the numbered events only: samples come with a replay from the start.
        resumed = list(client.attach(events[0].job_id, from_seq=2))
    finally:
        client.close()
    stored = [e for e in replay if e.HasField("metrics")]
    assert 2 <= len(stored) < len(live), (len(stored), len(live))
    # Aggregates keep the peak of memory: the summary over stored samples is the live one.
    assert max(e.metrics.ram_used for e in stored) == max(e.metrics.ram_used for e in live)
    # Replayed among the job's events, between its start and its end, ordered by time.
    assert [e.metrics for e in running_part(replay) if e.HasField("metrics")] == [
        e.metrics for e in stored
    ]
    assert [e.time for e in stored] == sorted(e.time for e in stored)
    assert [e for e in replay if not e.HasField("metrics")] == [
        e for e in events if not e.HasField("metrics")
    ]
    assert not any(e.HasField("metrics") for e in resumed)
    assert [e.seq for e in resumed] == list(range(2, len(resumed) + 2))


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


def test_no_cpu_figure_exceeds_the_runners_cores_for_short_jobs(client):
    """Short jobs once read 2647% on a 2-core machine: the first reading came right after
    CPU use was primed, a division by a sliver of time."""
    import psutil

    from remotecell.widgets._monitor_state import MonitorState

    bound = 100 * (psutil.cpu_count() or 1)
    busy = "import time\nend = time.perf_counter() + {}\nwhile time.perf_counter() < end: pass"
    readings: list[float] = []
    for seconds in [0.05] * 40 + [0.7]:
        state = MonitorState()
        for event in client.submit(pb.JobSpec(code=busy.format(seconds))):
            state.add(event)
            if event.HasField("metrics"):
                readings.append(event.metrics.cpu_percent)
        summary = state.snapshot(time.time())["summary"]
        assert summary["state"] == "succeeded"
        if summary["samples"]:
            assert summary["peak_cpu_percent"] <= bound, (summary, bound)
            assert summary["mean_cpu_percent"] <= bound, (summary, bound)
    assert readings and all(0 <= r <= bound for r in readings), (readings, bound)
