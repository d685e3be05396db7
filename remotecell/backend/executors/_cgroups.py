"""CPU and memory limits for local runners, with Linux control groups (cgroup v1).

A local runner that asks for ``cpu=`` or ``memory=`` goes into groups of its own,
``remotecell/RUNNER`` under the ``cpu`` and ``memory`` hierarchies: a CFS quota of
``cpu`` cores (``cpu.cfs_quota_us`` over a 100 ms period) and a memory limit
(``memory.limit_in_bytes``, swap included where the kernel accounts it). Children the
cell starts inherit the groups. A runner past its memory limit is killed by the kernel's
OOM killer, and :meth:`RunnerGroups.out_of_memory` tells that from another SIGKILL, so
the job says it ran out of memory.

Groups are removed when their runner has ended (and at the executor's start, those a
killed control plane left). Where the hierarchies are missing or not writable (not root, a unified cgroup v2 tree,
a read-only ``/sys/fs/cgroup``), :func:`confine` returns None with the reason, and the
local runner runs without limits: the docker executor enforces them everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("remotecell.executors")

ROOT = Path("/sys/fs/cgroup")
#: The CFS period the quota is a share of, in microseconds.
PERIOD_US = 100_000


class Unavailable(RuntimeError):
    """This machine cannot put local runners under limits; the message says why."""


@dataclass
class RunnerGroups:
    """One runner's groups, to check after it ended and then remove."""

    cpu: Path | None
    memory: Path | None
    memory_mb: int

    def out_of_memory(self) -> bool:
        """Whether the kernel's OOM killer ended a process of the group."""
        if self.memory is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            for line in (self.memory / "memory.oom_control").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":  # kernels since 4.13
                    return int(value) > 0
            return int((self.memory / "memory.failcnt").read_text()) > 0
        return False

    def remove(self) -> None:
        for group in (self.cpu, self.memory):
            if group is not None:
                with contextlib.suppress(OSError):
                    group.rmdir()


def confine(
    runner_id: str, pid: int, cpu: float, memory_mb: int, root: Path = ROOT
) -> RunnerGroups:
    """Puts process ``pid`` (a runner just started) under ``cpu`` cores and ``memory_mb``
    MiB (0: no limit of that kind).

    Raises:
        Unavailable: the limits cannot be set here; the message says why.
    """
    groups = RunnerGroups(None, None, memory_mb)
    try:
        if cpu > 0:
            groups.cpu = _group(root, "cpu", runner_id)
            (groups.cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (groups.cpu / "cpu.cfs_quota_us").write_text(str(max(1000, round(cpu * PERIOD_US))))
            (groups.cpu / "cgroup.procs").write_text(str(pid))
        if memory_mb > 0:
            groups.memory = _group(root, "memory", runner_id)
            limit = str(memory_mb * 2**20)
            (groups.memory / "memory.limit_in_bytes").write_text(limit)
            swap = groups.memory / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(limit)
            (groups.memory / "cgroup.procs").write_text(str(pid))
    except OSError as err:
        groups.remove()
        raise Unavailable(f"cannot set limits in {root} ({err.strerror or err})") from None
    return groups


def remove_stale(root: Path = ROOT) -> None:
    """Removes runners' groups that hold no process any more (left by a control plane
    that was killed); a group still in use stays."""
    for controller in ("cpu", "memory"):
        parent = root / controller / "remotecell"
        with contextlib.suppress(OSError):
            for group in parent.iterdir():
                with contextlib.suppress(OSError):
                    group.rmdir()


def _group(root: Path, controller: str, runner_id: str) -> Path:
    hierarchy = root / controller
    if not (hierarchy / "cgroup.procs").exists():
        raise Unavailable(f"no cgroup v1 '{controller}' hierarchy at {hierarchy}")
    group = hierarchy / "remotecell" / runner_id
    os.makedirs(group, exist_ok=True)
    return group
