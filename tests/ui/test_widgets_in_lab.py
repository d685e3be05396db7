"""The widgets' front ends in a real JupyterLab in headless Chromium: the job monitor of a
``%%remote gpu="H100"`` cell updates live and ends with a summary; ``%remote_gpus`` shows
the GPUs; the cancel button of ``%remote_jobs`` cancels a running job."""

from __future__ import annotations

import re
import time

import pytest
from lab_page import run_notebook, wait_kernel_idle

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

GPU_CELL = (
    '%%remote gpu="H100"\n'
    "import time\n"
    "for step in range(16):\n"
    "    time.sleep(0.5)\n"
    'print("gpu loop over")'
)

READ_MONITOR = """() => {
    const monitor = document.querySelector(".rc-monitor");
    const text = (selector) => {
        const found = monitor && monitor.querySelector(selector);
        return found ? found.textContent : null;
    };
    const spark = monitor && monitor.querySelector('[data-metric="utilization"] svg');
    return {
        phase: monitor && monitor.dataset.phase,
        where: text('[data-field="where"]'),
        elapsed: text('[data-field="elapsed"]'),
        gpuSeconds: text('[data-field="gpu-seconds"]'),
        cost: text('[data-field="cost"]'),
        gpu: text(".rc-row[data-gpu] .rc-row-name"),
        util: text('[data-metric="utilization"] .rc-metric-value'),
        memory: text('[data-metric="memory"] .rc-metric-value'),
        power: text('[data-metric="power"] .rc-metric-value'),
        temperature: text('[data-metric="temperature"] .rc-metric-value'),
        points: spark ? Number(spark.dataset.points) : 0,
        line: spark ? spark.querySelector(".rc-spark-line").getAttribute("d") : null,
    };
}"""


def seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+) s", text)
    assert match, text
    return float(match.group(1))


def test_the_job_monitor_updates_live_and_ends_with_a_summary(lab, page):
    run_notebook(page, lab.notebook("monitor.ipynb", ["%load_ext remotecell", GPU_CELL]))
    page.wait_for_selector(
        '.rc-monitor[data-phase="running"] .rc-row[data-gpu] [data-metric="utilization"] svg',
        timeout=60_000,
    )
    first = page.evaluate(READ_MONITOR)
    time.sleep(1.5)
    second = page.evaluate(READ_MONITOR)
    assert first["phase"] == second["phase"] == "running", (first, second)
    assert "on r-" in first["where"] and "1× H100" in first["where"]  # noqa: RUF001
    assert first["gpu"] == "GPU 0 NVIDIA H100 80GB HBM3"
    # The recorded card's readings, as the runner's sampler read them.
    assert (first["util"], first["power"], first["temperature"]) == ("97%", "612 W", "61 °C")
    assert first["memory"] == "40.0 GiB / 79.6 GiB"
    # What moves while the job runs: the time, the GPU-seconds, the cost, the sparklines.
    assert seconds(second["elapsed"]) >= seconds(first["elapsed"]) + 1, (first, second)
    assert second["gpuSeconds"] != first["gpuSeconds"] and second["gpuSeconds"].endswith(" GPU-s")
    assert second["cost"] != first["cost"] and second["cost"].startswith("$")
    assert second["points"] >= first["points"] + 2 and second["line"] != first["line"]

    page.wait_for_selector('.rc-monitor[data-phase="finished"] .rc-summary', timeout=60_000)
    summary = page.locator(".rc-summary").inner_text()
    assert summary.splitlines()[0].startswith("succeeded in ")
    assert "GPU 0 NVIDIA H100 80GB HBM3: peak memory 40.0 GiB of 79.6 GiB" in summary
    assert "mean utilisation 97%" in summary
    assert page.locator(".jp-OutputArea-output", has_text="gpu loop over").count() == 1


def test_remote_gpus_shows_the_machines_gpus(lab, page):
    run_notebook(page, lab.notebook("gpus.ipynb", ["%load_ext remotecell", "%remote_gpus"]))
    page.wait_for_selector(".rc-inventory tr[data-gpu]", timeout=60_000)
    rows = page.locator(".rc-inventory tbody tr")
    assert rows.count() == 2
    first = rows.nth(0).inner_text().split("\t")
    assert first[:5] == ["0", "H100", "NVIDIA H100 80GB HBM3", "79.6 GiB", "$3.95/h"]
    assert page.locator('.rc-inventory [data-field="count"]').inner_text().startswith("2 GPUs")


def test_the_job_tables_cancel_button_cancels_a_running_job(lab, page, ui_control_plane):
    cells = [
        "%load_ext remotecell",
        "%%remote detach=True\nimport time\ntime.sleep(120)",
        "%remote_jobs",
    ]
    run_notebook(page, lab.notebook("jobs.ipynb", cells))
    button = page.locator(".rc-jobs .rc-cancel").first
    button.wait_for(timeout=60_000)
    job_id = button.get_attribute("data-job")
    wait_kernel_idle(page)  # a button's message reaches the kernel between cells
    button.click()
    page.wait_for_selector(
        f'.rc-jobs tr[data-job="{job_id}"][data-state="cancelled"]', timeout=30_000
    )
    assert page.locator(".rc-jobs .rc-head").inner_text().find(f"{job_id}: cancelled") >= 0
    client = ui_control_plane.client()
    try:
        assert client.get_job(job_id).state == 5  # CANCELLED
    finally:
        client.close()
