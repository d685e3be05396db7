"""cpu= and memory= for local runners: control groups of their own, a quota and a limit,
and a runner past its memory limit fails its job saying it ran out of memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import missing, wait_until
from test_executor_local import finished, read_until, stdout_of

from remotecell._proto import pb
from remotecell.backend.executors import _cgroups

READ_LIMITS = """\
groups = dict(line.split(":")[1:] for line in open("/proc/self/cgroup").read().splitlines())
quota = open(f"/sys/fs/cgroup/cpu{groups['cpu']}/cpu.cfs_quota_us").read().strip()
period = open(f"/sys/fs/cgroup/cpu{groups['cpu']}/cpu.cfs_period_us").read().strip()
limit = open(f"/sys/fs/cgroup/memory{groups['memory']}/memory.limit_in_bytes").read().strip()
print(quota, period, limit, groups["cpu"], groups["memory"])
"""


@pytest.fixture(autouse=True)
def cgroups_here() -> None:
    """These tests need the cgroup v1 hierarchies, writable (root): CI has them."""
    try:
        probe = _cgroups.confine("r-probe", os.getpid(), 0, 0)
    except _cgroups.Unavailable as err:
        missing(f"local runner limits are unavailable: {err}")
    probe.remove()
    for controller in ("cpu", "memory"):
        if not os.access(_cgroups.ROOT / controller, os.W_OK):
            missing(f"{_cgroups.ROOT / controller} is not writable")


def run(client, code: str, **resources) -> list[pb.JobEvent]:
    spec = pb.JobSpec(code=code, resources=pb.Resources(**resources))
    return read_until(client.submit(spec), finished)


def test_a_runner_gets_its_cpu_quota_and_memory_limit(client) -> None:
    events = run(client, READ_LIMITS, cpu=0.5, memory_mb=300)
    assert events[-1].finished.state == pb.SUCCEEDED, events[-1]
    quota, period, limit, cpu_group, memory_group = stdout_of(events).split()
    assert (int(quota), int(period)) == (50_000, 100_000)  # half a core
    assert int(limit) == 300 * 2**20
    assert cpu_group.startswith("/remotecell/r-") and memory_group == cpu_group


def test_a_cell_past_its_memory_limit_fails_saying_so(control_plane, client) -> None:
    code = "blocks = []\nfor _ in range(40):\n    blocks.append(bytearray(16 << 20))"  # 640 MiB
    events = run(client, code, memory_mb=200)
    end = events[-1].finished
    assert end.state == pb.FAILED
    assert "ran out of memory: the cell used all of its memory=200 MiB" in end.message, end.message
    assert "ask for more with memory=" in end.message
    # The same cell within its memory runs.
    assert run(client, code, memory_mb=1024)[-1].finished.state == pb.SUCCEEDED


def test_a_runner_without_limits_gets_no_groups_and_ended_runners_leave_none(
    make_control_plane,
) -> None:
    cp = make_control_plane("--scaledown-window", "1")
    client = cp.client()
    try:
        plain = run(client, "print(open('/proc/self/cgroup').read())")
        assert "/remotecell/" not in stdout_of(plain)
        limited = run(client, READ_LIMITS, cpu=1.0)
        assert limited[-1].finished.state == pb.SUCCEEDED
    finally:
        client.close()
    cpu_group = _cgroups.ROOT / "cpu" / stdout_of(limited).split()[3].lstrip("/")
    assert cpu_group.is_dir()
    # The runner scales down after 1 s; its group goes with it.
    wait_until(lambda: not cpu_group.exists(), 20, what=f"{cpu_group} to be removed")


def test_confine_says_why_it_cannot(tmp_path: Path) -> None:
    with pytest.raises(_cgroups.Unavailable, match="no cgroup v1 'cpu' hierarchy"):
        _cgroups.confine("r-x", os.getpid(), 1.0, 0, root=tmp_path)
