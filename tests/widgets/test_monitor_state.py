"""The job monitor's data: a job's events in, what the monitor shows out (no browser)."""

from __future__ import annotations

import pytest
from gpu_fake import CARDS, MiB, machine

from remotecell._proto import pb
from remotecell.backend.runner._sampler import Sampler
from remotecell.contract.resources import GPU_TYPES
from remotecell.widgets._monitor_state import (
    MonitorState,
    Throttle,
    format_bytes,
    format_money,
    format_seconds,
)

T0 = 1_750_000_000.0
H100 = "NVIDIA H100 80GB HBM3"
H100_PRICE = GPU_TYPES["H100"].per_second_usd


def event(at: float, **body: object) -> pb.JobEvent:
    return pb.JobEvent(job_id="job-1", time=T0 + at, **body)  # type: ignore[arg-type]


def running(at: float, **status: object) -> pb.JobEvent:
    return event(
        at, status=pb.Status(state=pb.RUNNING, message="running on r-1", runner_id="r-1", **status)
    )


def cpu_reading(at: float, cpu: float, ram: int) -> pb.JobEvent:
    return event(at, metrics=pb.Metrics(cpu_percent=cpu, ram_used=ram, ram_total=16 * 2**30))


def finished(at: float, state: int = pb.SUCCEEDED, message: str = "") -> pb.JobEvent:
    return event(at, finished=pb.Finished(state=state, message=message))


def feed(state: MonitorState, *events: pb.JobEvent) -> MonitorState:
    for e in events:
        state.add(e)
    return state


@pytest.fixture
def fake_h100s(monkeypatch):
    """The runner's own sampler over two recorded H100s (NVML is the one thing faked)."""
    monkeypatch.setenv("REMOTECELL_FAKE_NVML", f"{H100},{H100}")
    cards = machine(H100, H100)
    sampler = Sampler([cards[0].uuid])
    yield sampler, cards
    sampler.close()


def test_a_waiting_job_says_why_and_how_long_then_runs():
    state = feed(
        MonitorState(),
        event(0, accepted=pb.Accepted(state=pb.QUEUED)),
        event(0.1, status=pb.Status(state=pb.QUEUED, message="waiting for H100 — 2 jobs ahead")),
    )
    view = state.snapshot(now=T0 + 3.1)
    assert (view["job_id"], view["phase"]) == ("job-1", "waiting")
    assert view["message"] == "waiting for H100 — 2 jobs ahead"
    assert view["waited"] == 3.1 and view["elapsed"] == 0
    assert state.text(T0 + 3.1) == "remotecell job-1: waiting for H100 — 2 jobs ahead (3.1 s)"

    state.add(running(5, gpu_type="H100", gpu_count=1))
    view = state.snapshot(now=T0 + 7)
    assert (view["phase"], view["runner_id"], view["waited"]) == ("running", "r-1", 0)
    assert view["elapsed"] == 2.0
    assert (view["gpu_type"], view["gpu_count"], view["gpu_seconds"]) == ("H100", 1, 2.0)


def test_a_gpu_job_from_the_runners_readings_of_a_recorded_h100(fake_h100s):
    sampler, cards = fake_h100s
    card = CARDS[H100]
    state = feed(MonitorState(), running(10, gpu_type="H100", gpu_count=1))
    for i in range(4):
        state.add(event(10.5 + 0.5 * i, metrics=sampler.read()))
    view = state.snapshot(now=T0 + 12.2)
    assert view["times"] == [0.5, 1.0, 1.5, 2.0]
    [gpu] = view["gpus"]
    assert (gpu["uuid"], gpu["label"], gpu["name"]) == (cards[0].uuid, "GPU 0", "H100")
    assert gpu["utilization"] == [card.utilization] * 4
    assert gpu["memory_used"] == [card.memory_used] * 4
    assert gpu["memory_total"] == card.memory_total == 81559 * MiB
    assert gpu["power_w"] == [card.power_mw / 1000] * 4
    assert gpu["temperature_c"] == [card.temperature_c] * 4
    assert view["elapsed"] == 2.2 and view["gpu_seconds"] == 2.2
    assert view["cost_usd"] == pytest.approx(H100_PRICE * 2.2)
    assert view["summary"] == {}
    text = state.text(T0 + 12.2)
    assert text.splitlines()[0].startswith("remotecell job-1: running on r-1 · 1× H100 · 2.2 s")  # noqa: RUF001
    assert "GPU 0 H100: 97% · 40.0 GiB of 79.6 GiB · 612 W · 61 °C" in text

    state.add(finished(13))
    view = state.snapshot(now=T0 + 100)  # a finished job's numbers no longer move
    assert view["phase"] == "finished" and view["state"] == "succeeded"
    assert view["elapsed"] == 3.0 and view["gpu_seconds"] == 3.0
    summary = view["summary"]
    assert summary["gpus"] == [
        {
            "label": "GPU 0",
            "name": "H100",
            "peak_memory_used": card.memory_used,
            "memory_total": card.memory_total,
            "mean_utilization": 97.0,
        }
    ]
    assert summary["cost_usd"] == pytest.approx(H100_PRICE * 3.0)
    assert summary["samples"] == 4
    lines = state.text(T0 + 100).splitlines()
    assert lines[0].startswith("remotecell job-1: succeeded on r-1 · 1× H100 in 3.0 s · 3.0 GPU-s")  # noqa: RUF001
    assert lines[1] == "  GPU 0 H100: peak memory 40.0 GiB of 79.6 GiB · mean utilisation 97%"


def test_series_keep_a_window_while_the_summary_covers_the_whole_job():
    state = MonitorState(window=5)
    state.add(running(0))
    for i in range(12):
        state.add(cpu_reading(0.5 * (i + 1), cpu=10.0 * i, ram=(100 + i) * MiB))
    view = state.snapshot(now=T0 + 6)
    assert view["times"] == [4.0, 4.5, 5.0, 5.5, 6.0]
    assert view["cpu_percent"] == [70.0, 80.0, 90.0, 100.0, 110.0]
    state.add(finished(6.5))
    summary = state.snapshot(now=T0 + 7)["summary"]
    assert summary["samples"] == 12
    assert summary["mean_cpu_percent"] == 55.0 and summary["peak_cpu_percent"] == 110.0
    assert summary["peak_ram_used"] == 111 * MiB


def test_a_cpu_only_job_shows_cpu_and_ram_and_no_gpu_cost():
    state = feed(
        MonitorState(),
        running(1),
        cpu_reading(1.5, 50.0, 300 * MiB),
        cpu_reading(2.0, 150.0, 500 * MiB),
    )
    view = state.snapshot(now=T0 + 2.0)
    assert view["gpus"] == [] and view["gpu_count"] == 0
    assert view["cpu_percent"] == [50.0, 150.0]
    assert view["ram_used"] == [300 * MiB, 500 * MiB] and view["ram_total"] == 16 * 2**30
    assert view["gpu_seconds"] == 0 and view["cost_usd"] is None
    assert state.text(T0 + 2.0).splitlines() == [
        "remotecell job-1: running on r-1 · 1.0 s",
        "  CPU 150% · RAM 500 MiB of 16.0 GiB",
    ]
    state.add(finished(2.5, pb.FAILED, "ValueError: bad input"))
    view = state.snapshot(now=T0 + 3)
    assert (view["state"], view["message"]) == ("failed", "ValueError: bad input")
    assert view["summary"]["mean_cpu_percent"] == 100.0
    assert state.text(T0 + 3).splitlines() == [
        "remotecell job-1: failed on r-1 in 1.5 s",
        "  peak RAM 500 MiB · mean CPU 100%",
    ]


def test_a_cpu_only_job_shows_a_cost_only_where_the_control_plane_charges_for_it():
    free = feed(MonitorState(), running(0, price_per_second=0.0), finished(1))
    assert free.snapshot(T0 + 1)["cost_usd"] == 0.0
    assert free.text(T0 + 1) == "remotecell job-1: succeeded on r-1 in 1.0 s"
    charged = feed(MonitorState(), running(0, price_per_second=0.5), finished(1))
    assert charged.text(T0 + 1) == "remotecell job-1: succeeded on r-1 in 1.0 s · $0.5000"


def test_the_control_planes_price_wins_over_the_default():
    state = feed(MonitorState(), running(0, gpu_type="H100", gpu_count=2, price_per_second=0.01))
    state.add(finished(30))
    view = state.snapshot(now=T0 + 30)
    assert view["gpu_seconds"] == 60.0
    assert view["cost_usd"] == pytest.approx(0.3)  # the job's price per second, not per GPU
    assert " · 60.0 GPU-s · $0.3000" in state.text(T0 + 30)


def test_the_default_price_is_per_gpu_and_an_unpriced_type_costs_unknown():
    two = feed(MonitorState(), running(0, gpu_type="H100", gpu_count=2), finished(10))
    assert two.snapshot(T0 + 10)["cost_usd"] == pytest.approx(H100_PRICE * 2 * 10)
    unpriced = feed(MonitorState(), running(0, gpu_type="L40", gpu_count=1), finished(10))
    assert unpriced.snapshot(T0 + 10)["cost_usd"] is None
    assert "· 10.0 GPU-s · cost unknown" in unpriced.text(T0 + 10)


def test_without_the_type_from_the_control_plane_the_inventory_names_and_prices_the_gpus():
    uuid = machine(H100)[0].uuid
    reading = pb.Metrics(gpus=[pb.GPUMetric(uuid=uuid, utilization=50)])
    state = feed(MonitorState(), running(0), event(0.5, metrics=reading))
    assert state.unnamed_gpus() == [uuid]
    assert state.snapshot(T0 + 1)["cost_usd"] is None  # one GPU, of no known type yet
    state.name_gpus({uuid: (H100, "H100")})
    assert state.unnamed_gpus() == []
    view = state.snapshot(T0 + 1)
    assert (view["gpu_type"], view["gpu_count"]) == ("H100", 1)
    assert view["gpus"][0]["name"] == H100
    assert view["cost_usd"] == pytest.approx(H100_PRICE)


def test_a_reading_the_card_lacks_is_a_gap_not_a_zero():
    reading = pb.Metrics(gpus=[pb.GPUMetric(uuid="GPU-a", utilization=0, memory_used=5 * MiB)])
    state = feed(MonitorState(), running(0), event(0.5, metrics=reading))
    [gpu] = state.snapshot(T0 + 1)["gpus"]
    assert gpu["utilization"] == [0] and gpu["memory_used"] == [5 * MiB]
    assert gpu["power_w"] == [None] and gpu["temperature_c"] == [None]
    assert "  GPU 0: 0% · 5 MiB\n" in state.text(T0 + 1)


def test_a_retry_waits_again_and_only_running_time_counts():
    state = feed(
        MonitorState(),
        running(1, gpu_type="T4", gpu_count=1),
        event(3, status=pb.Status(state=pb.QUEUED, message="retrying (attempt 2)", attempt=1)),
    )
    view = state.snapshot(T0 + 4)
    assert (view["phase"], view["message"], view["attempt"]) == (
        "waiting",
        "retrying (attempt 2)",
        1,
    )
    assert view["elapsed"] == 2.0 and view["waited"] == 1.0
    state.add(running(5, gpu_type="T4", gpu_count=1, attempt=1))
    state.add(finished(6))
    assert state.snapshot(T0 + 9)["elapsed"] == 3.0


def test_readings_before_the_running_status_still_mean_running():
    # A replay starts wherever the stream does; readings show the job ran.
    state = feed(MonitorState(), cpu_reading(2, 10, MiB), cpu_reading(2.5, 20, MiB))
    view = state.snapshot(T0 + 2.5)
    assert view["phase"] == "running" and view["times"] == [0.0, 0.5] and view["elapsed"] == 0.5


def test_a_replay_of_an_old_job_shows_its_own_durations_not_the_clock():
    events = [running(0), *[cpu_reading(0.5 * i, 5, MiB) for i in range(1, 5)], finished(2.5)]
    state = feed(MonitorState(), *events)
    view = state.snapshot(now=T0 + 86400)  # attached a day later
    assert view["elapsed"] == 2.5 and view["summary"]["elapsed"] == 2.5


def test_the_kernels_clock_running_behind_never_moves_time_backwards():
    state = feed(MonitorState(), running(0), cpu_reading(4, 5, MiB))
    assert state.snapshot(now=T0 + 3)["elapsed"] == 4.0


def test_throttle_lets_one_sync_through_per_interval():
    throttle = Throttle(0.25)
    assert [throttle.due(t) for t in (0.0, 0.1, 0.2, 0.25, 0.3, 0.6)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]


def test_formats():
    assert [format_seconds(s) for s in (0.04, 59.94, 65, 3600 + 180)] == [
        "0.0 s",
        "59.9 s",
        "1 min 05 s",
        "1 h 03 min",
    ]
    assert [format_bytes(b) for b in (512, 300 * MiB, 40 * 2**30)] == [
        "0 KiB",
        "300 MiB",
        "40.0 GiB",
    ]
    assert [format_money(u) for u in (0.0658, 3.949)] == ["$0.0658", "$3.95"]
