"""The widgets' Python side: synced traits, throttling, plain text, buttons' messages.

The inventory and the job table talk to a real control plane (fake GPUs: NVML only).
"""

from __future__ import annotations

import pytest
from gpu_fake import machine
from support import wait_until

from remotecell._proto import pb
from remotecell.client.listing import format_gpus, format_jobs
from remotecell.widgets import GPUInventory, JobMonitor, JobTable, _static

H100 = "NVIDIA H100 80GB HBM3"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def reading(at: float, cpu: float) -> pb.JobEvent:
    return pb.JobEvent(
        job_id="job-1",
        time=at,
        metrics=pb.Metrics(cpu_percent=cpu, ram_used=2**20, ram_total=2**30),
    )


def test_job_monitor_syncs_at_most_once_per_interval_and_flushes_at_the_end():
    clock = Clock()
    monitor = JobMonitor(sync_interval=0.25, clock=clock)
    assert monitor.phase == "starting" and monitor.times == []
    synced: list[int] = []
    monitor.observe(lambda change: synced.append(len(change["new"])), names="times")

    monitor.add(reading(clock.now, 10))  # the first change goes at once
    for i in range(1, 10):  # a burst (a replay's history): held back
        clock.now += 0.01
        monitor.add(reading(clock.now, 10 + i))
    assert synced == [1]
    monitor.tick()
    assert synced == [1]
    clock.now += 0.25
    monitor.tick()  # an idle tick after the interval carries the rest
    assert synced == [1, 10]
    assert monitor.cpu_percent[-1] == 19.0 and monitor.phase == "running"

    monitor.add(
        pb.JobEvent(job_id="job-1", time=clock.now, finished=pb.Finished(state=pb.SUCCEEDED))
    )
    assert monitor.summary == {}  # within the interval
    monitor.flush()
    assert monitor.phase == "finished" and monitor.summary["samples"] == 10


def test_job_monitor_shows_plain_text_beside_the_widget():
    clock = Clock()
    monitor = JobMonitor(clock=clock)
    monitor.add(
        pb.JobEvent(
            job_id="job-7",
            time=clock.now,
            status=pb.Status(state=pb.QUEUED, message="starting a runner"),
        )
    )
    data, _ = monitor._repr_mimebundle_()
    assert data["text/plain"] == "remotecell job-7: starting a runner"
    assert data[WIDGET_VIEW]["model_id"] == monitor.model_id
    assert repr(monitor) == data["text/plain"]


def test_the_widgets_load_their_built_front_ends():
    for widget, name in (
        (JobMonitor, "monitor.js"),
        (GPUInventory, "inventory.js"),
        (JobTable, "job_table.js"),
    ):
        assert "export" in str(widget._esm), name
        assert "not built" not in str(widget._esm), (
            f"{name}: run `jlpm build:prod` (or pip install .)"
        )
    assert ".rc-monitor" in str(JobMonitor._css)


def test_a_missing_front_end_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(_static, "STATIC", tmp_path)
    module = _static.esm("monitor.js")
    assert isinstance(module, str)
    assert "remotecell/widgets/static/monitor.js is missing" in module
    assert "pip install ." in module
    assert _static.css() == ""


@pytest.fixture
def gpu_client(make_control_plane, monkeypatch):
    monkeypatch.setenv("REMOTECELL_FAKE_NVML", f"{H100},{H100}")
    client = make_control_plane().client()
    yield client
    client.close()


def test_gpu_inventory_lists_the_gpus_and_refreshes_on_the_buttons_message(gpu_client):
    inventory = GPUInventory(gpu_client)
    uuids = [card.uuid for card in machine(H100, H100)]
    assert [row["uuid"] for row in inventory.gpus] == uuids
    first = inventory.gpus[0]
    assert (first["index"], first["name"], first["type"], first["state"]) == (
        0,
        H100,
        "H100",
        "free",
    )
    assert first["price_per_second"] == pytest.approx(0.001097)
    assert repr(inventory) == format_gpus(gpu_client.list_gpus())

    events = gpu_client.submit(
        pb.JobSpec(
            code="import time\ntime.sleep(30)",
            resources=pb.Resources(gpu=[pb.GPUChoice(type="H100", count=1)]),
        )
    )
    job_id = next(events).job_id
    events.close()
    try:

        def busy():
            inventory._handle_custom_msg({"action": "refresh"}, [])  # the refresh button
            return [row for row in inventory.gpus if row["job_id"] == job_id]

        [row] = wait_until(busy, 30, interval=0.2, what="a GPU to be held by the job")
        assert row["state"] == "busy" and row["runner_id"].startswith("r-")
        assert job_id in repr(inventory)
    finally:
        gpu_client.cancel(job_id, "test over")


def test_job_table_cancels_a_running_job_from_its_button(client):
    events = client.submit(pb.JobSpec(code="import time\ntime.sleep(30)"))
    job_id = next(events).job_id
    events.close()
    table = JobTable(client, limit=5)
    [row] = [r for r in table.jobs if r["job_id"] == job_id]
    assert row["cancellable"] and row["state"] in ("queued", "running")
    assert row["summary"] == "import time" and row["price_per_second"] is None
    assert repr(table) == format_jobs(client.list_jobs(5))

    table._handle_custom_msg({"action": "cancel", "job_id": job_id}, [])  # the cancel button
    assert table.notice == f"{job_id}: cancelled" and table.error == ""
    [row] = [r for r in table.jobs if r["job_id"] == job_id]
    assert row["state"] == "cancelled" and not row["cancellable"]

    table._handle_custom_msg({"action": "cancel", "job_id": "job-nope"}, [])
    assert table.error.startswith("could not cancel: ") and "job-nope" in table.error


def test_a_button_on_a_closed_connection_says_so_in_the_table(control_plane):
    client = control_plane.client()
    table = JobTable(client)
    client.close()  # the extension was unloaded meanwhile
    table._on_message(table, {"action": "refresh"}, [])
    assert table.error.startswith("could not refresh: this connection to the control plane")
    assert "run the command again" in table.error
