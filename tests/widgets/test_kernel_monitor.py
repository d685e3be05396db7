"""The job monitor through a real kernel: its comm opens with the job and its metric values
update while the job runs; a replay after ``%remote_attach`` shows the same job."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.kernel

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MONITOR = "remotecell.widgets._monitor.JobMonitor"


class Iopub:
    """The cell's iopub messages as they arrive, with when."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, dict]] = []

    def __call__(self, msg: dict) -> None:
        self.messages.append((time.monotonic(), msg))

    def monitor_comm(self) -> str:
        [comm_id] = [
            m["content"]["comm_id"]
            for _, m in self.messages
            if m["msg_type"] == "comm_open"
            and m["content"]["data"]["state"].get("_anywidget_id") == MONITOR
        ]
        return comm_id

    def final_state(self, comm_id: str) -> dict:
        """The model's state after every message (an update carries only what changed)."""
        state = dict(
            next(
                m["content"]["data"]["state"]
                for _, m in self.messages
                if m["msg_type"] == "comm_open" and m["content"]["comm_id"] == comm_id
            )
        )
        for _, _, changed in self.updates(comm_id):
            state.update(changed)
        return state

    def updates(self, comm_id: str) -> list[tuple[float, int, dict]]:
        """(arrival, position, state) of each update of the comm."""
        return [
            (at, i, m["content"]["data"]["state"])
            for i, (at, m) in enumerate(self.messages)
            if m["msg_type"] == "comm_msg"
            and m["content"]["comm_id"] == comm_id
            and m["content"]["data"].get("method") == "update"
        ]

    def position(self, predicate) -> int:
        return next(i for i, (_, m) in enumerate(self.messages) if predicate(m))


def test_a_running_cpu_jobs_monitor_updates_live_then_shows_its_summary(kernel):
    iopub = Iopub()
    run = kernel.execute(
        "%%remote\nimport time\nblock = bytearray(30 * 2**20)\n"
        "for i in range(8):\n    time.sleep(0.5)\nprint('loop over')",
        on_message=iopub,
    )
    assert run.reply["status"] == "ok", run.error
    comm_id = iopub.monitor_comm()
    opened = iopub.position(lambda m: m["msg_type"] == "comm_open")
    shown = iopub.position(lambda m: m["msg_type"] == "display_data")
    displayed = iopub.messages[shown][1]["content"]["data"]
    assert displayed[WIDGET_VIEW]["model_id"] == comm_id and opened < shown
    assert displayed["text/plain"].startswith("remotecell job-")

    # Updates carry new readings while the job runs: before its last output and its end.
    loop_over = iopub.position(
        lambda m: m["msg_type"] == "stream" and "loop over" in m["content"]["text"]
    )
    updates = iopub.updates(comm_id)
    live = [(at, state) for at, i, state in updates if i < loop_over and "cpu_percent" in state]
    assert len({len(state["cpu_percent"]) for _, state in live}) >= 3, live
    assert all(state.get("phase", "running") == "running" for _, state in live)
    grown = [len(state["times"]) for _, state in live]
    assert grown == sorted(grown) and grown[-1] >= 4
    assert max(max(state["ram_used"]) for _, state in live) > 30 * 2**20
    # Throttled: at most one update per 0.25 s (and a final one), however many events.
    span = updates[-1][0] - updates[0][0]
    assert len(updates) <= span / 0.25 + 3, [round(at - updates[0][0], 2) for at, _, _ in updates]

    # At the end: the summary, in the widget and in the plain text front ends keep.
    final = iopub.final_state(comm_id)
    assert final["phase"] == "finished" and final["state"] == "succeeded"
    summary = final["summary"]
    assert summary["samples"] >= 6 and summary["peak_ram_used"] > 30 * 2**20
    assert summary["gpus"] == [] and final["gpu_count"] == 0
    assert 3.5 < summary["elapsed"] < 15
    [text] = [
        m["content"]["data"]["text/plain"]
        for _, m in iopub.messages
        if m["msg_type"] == "update_display_data"
    ]
    assert text.startswith(f"remotecell {final['job_id']}: succeeded on r-")
    assert "peak RAM" in text and "mean CPU" in text

    # A replay after %remote_attach shows the same job, finished, in a handful of updates.
    replay = Iopub()
    attached = kernel.execute(f"%remote_attach {final['job_id']}", on_message=replay)
    assert attached.reply["status"] == "ok", attached.error
    assert attached.stdout == "loop over\n"
    replayed_comm = replay.monitor_comm()
    assert replayed_comm != comm_id
    assert len(replay.updates(replayed_comm)) <= 4
    again = replay.final_state(replayed_comm)
    assert again["phase"] == "finished" and again["state"] == "succeeded"
    assert again["job_id"] == final["job_id"]
    assert abs(again["summary"]["elapsed"] - summary["elapsed"]) < 0.01
    assert again["summary"]["samples"] >= 1 and again["times"]
