"""Downsampling telemetry for storage: intervals, aggregates that keep peaks right."""

from __future__ import annotations

import pytest

from remotecell._proto import pb
from remotecell.backend.telemetry.downsample import Downsampler, aggregate


def reading(cpu: float, ram: int, **gpu: float) -> pb.Metrics:
    m = pb.Metrics(cpu_percent=cpu, ram_used=ram, ram_total=1000)
    if gpu:
        m.gpus.add(uuid="GPU-a", **gpu)
    return m


def test_rates_are_averaged_and_memory_and_temperature_keep_their_peak() -> None:
    out = aggregate(
        [
            reading(10, 100, utilization=20, memory_used=5, power_w=100.0, temperature_c=60),
            reading(30, 300, utilization=60, memory_used=9, power_w=300.0, temperature_c=70),
            reading(20, 200, utilization=40, memory_used=7, power_w=200.0, temperature_c=65),
        ]
    )
    assert out.cpu_percent == pytest.approx(20)
    assert out.ram_used == 300
    assert out.ram_total == 1000
    (gpu,) = out.gpus
    assert (gpu.utilization, gpu.memory_used, gpu.temperature_c) == (40, 9, 70)
    assert gpu.power_w == pytest.approx(200.0)
    assert not gpu.HasField("sm_clock_mhz")  # no sample had it: it stays unset


def test_a_reading_some_samples_lack_is_aggregated_over_those_that_have_it() -> None:
    out = aggregate([reading(0, 1, utilization=50), reading(0, 1, memory_used=3)])
    (gpu,) = out.gpus
    assert gpu.utilization == 50
    assert gpu.memory_used == 3


def test_an_interval_closes_with_the_first_reading_past_it() -> None:
    samples = Downsampler(interval=5.0)
    assert samples.add(100.0, reading(10, 1)) is None
    assert samples.add(102.5, reading(20, 2)) is None
    assert samples.add(104.9, reading(30, 3)) is None
    done = samples.add(105.0, reading(90, 9))
    assert done is not None
    time, out = done
    assert time == 104.9  # stamped with its last reading
    assert out.cpu_percent == pytest.approx(20)
    assert out.ram_used == 3
    # The reading that closed it opens the next interval.
    time, out = samples.flush()  # type: ignore[misc]
    assert (time, out.cpu_percent) == (105.0, 90)
    assert samples.flush() is None


def test_an_hour_of_half_second_readings_is_720_stored_samples() -> None:
    samples = Downsampler(interval=5.0)
    stored = [d for i in range(7200) if (d := samples.add(i * 0.5, reading(1, i))) is not None]
    last = samples.flush()
    assert last is not None
    stored.append(last)
    assert len(stored) == 720
    assert max(m.ram_used for _, m in stored) == 7199
