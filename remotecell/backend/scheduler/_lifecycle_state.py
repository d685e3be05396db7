"""What the lifecycle remembers of each active job and each runner it knows of."""

from __future__ import annotations

from dataclasses import dataclass

from remotecell._proto import pb
from remotecell.backend.scheduler.queue import Pool
from remotecell.contract.resources import GPURequest


@dataclass
class JobRecord:
    id: str
    pool: Pool
    gpu: GPURequest | None
    retries: int
    timeout_s: float
    state: int = pb.QUEUED
    attempt: int = 0
    runner_id: str = ""
    cancel_reason: str = ""
    timed_out: bool = False
    queued: bool = False  # in the queue (not preparing, not backing off)
    timeout_at: float | None = None
    kill_at: float | None = None  # the cancel grace of an interrupted cell
    orphan_at: float | None = None  # restored: its runner must be back by then
    retry_at: float | None = None

    def deadlines(self) -> list[float]:
        return [
            t
            for t in (self.timeout_at, self.kill_at, self.orphan_at, self.retry_at)
            if t is not None
        ]

    def clear_deadlines(self) -> None:
        self.timeout_at = self.kill_at = self.orphan_at = self.retry_at = None


@dataclass
class RunnerRecord:
    id: str
    pool: Pool
    launched: bool = True  # started by this control plane (not one that came back)
    expected: bool = False  # ran a job when the control plane restarted; not back yet
    connected: bool = False
    ever_connected: bool = False
    stopping: bool = False
    job: str = ""  # the job whose task it runs, as far as is known here
    stale_job: str = ""  # a job that ended here while the runner still ran it
    lost_at: float | None = None
    kill_at: float | None = None
    kill_reason: str = ""

    def deadlines(self) -> list[float]:
        return [t for t in (self.lost_at, self.kill_at) if t is not None]
