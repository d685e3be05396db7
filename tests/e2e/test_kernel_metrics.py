"""Metrics events reach a real kernel while a CPU job runs, and the job keeps a summary."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel


def test_a_running_cpu_jobs_metrics_reach_the_kernel(kernel):
    kernel.ok("%%remote detach=True\nimport time\nblock = bytearray(50 * 2**20)\ntime.sleep(1)")
    kernel.ok("job = _")
    kernel.ok("job.result()")
    assert kernel.value("job.metrics.samples") >= 1
    # The 50 MiB the cell held are in the peak; the machine's total is the ceiling.
    assert kernel.value("job.metrics.peak_ram_used") > 50 * 2**20
    assert kernel.value("job.metrics.last.ram_total >= job.metrics.peak_ram_used") is True
    assert kernel.value("len(job.metrics.gpus)") == 0
