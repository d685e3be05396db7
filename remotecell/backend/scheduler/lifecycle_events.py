"""The job lifecycle's vocabulary: its configuration, the events it is fed and the
instructions it returns (``scheduler/lifecycle.py`` holds the decisions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from remotecell._proto import pb
from remotecell.backend.scheduler.queue import (
    Pool,
    Prewarm,
    SchedulerConfig,
    StartRunner,
    StopRunner,
    Tick,
    Waiting,
)
from remotecell.contract.resources import GPURequest

#: Failures of an attempt that ``retries`` may retry (not setup failures: those repeat).
RETRYABLE = frozenset({pb.Error.USER_CODE, pb.Error.RUNNER_DIED, pb.Error.TIMEOUT})


@dataclass(frozen=True)
class LifecycleConfig:
    cancel_grace: float = 5.0
    #: How long a runner whose connection dropped (or that ran a job when the control
    #: plane restarted) may take to come back.
    reconnect_grace: float = 15.0
    #: How long a runner asked to stop may take before it is killed.
    stop_grace: float = 5.0
    #: The first retry's backoff; each later one waits twice as long, up to the maximum.
    retry_delay: float = 1.0
    retry_max_delay: float = 60.0
    queue: SchedulerConfig = field(default_factory=SchedulerConfig)

    def backoff(self, attempt: int) -> float:
        """How long a job waits before attempt ``attempt + 1``."""
        if self.retry_delay <= 0:
            return 0.0
        return min(self.retry_delay * 2 ** max(0, attempt - 1), self.retry_max_delay)


@dataclass(frozen=True)
class Failure:
    """Why a job failed, as its stored ``error`` event says it."""

    kind: int  # pb.Error.Kind
    type_name: str
    message: str


# ----------------------------------------------------------------- events


@dataclass(frozen=True)
class JobSubmitted:
    """A job exists; it waits for ``JobReady`` (its image) before it is queued."""

    job_id: str
    pool: Pool
    now: float
    gpu: GPURequest | None = None
    retries: int = 0
    timeout_s: float = 0.0


@dataclass(frozen=True)
class JobReady:
    """A submitted job's image is in hand: it joins the queue."""

    job_id: str
    now: float


@dataclass(frozen=True)
class JobRestored:
    """A job that was running when the control plane stopped: its runner may come back."""

    job_id: str
    pool: Pool
    now: float
    runner_id: str
    attempt: int
    started: float
    gpu: GPURequest | None = None
    retries: int = 0
    timeout_s: float = 0.0
    gpus: tuple[str, ...] = ()  # the UUIDs its runner holds


@dataclass(frozen=True)
class JobFailed:
    """A job could not be prepared (its image) or its task not be made (its secrets,
    just after ``SendTask``: then the runner never got the task and is free again)."""

    job_id: str
    failure: Failure
    now: float
    message: str = ""  # the job's end in a line; default: the failure's message


@dataclass(frozen=True)
class CancelRequested:
    job_id: str
    reason: str
    now: float


@dataclass(frozen=True)
class TaskFinished:
    """A runner's ``finished`` event for a job's task."""

    runner_id: str
    job_id: str
    state: int  # pb.JobState
    message: str
    now: float
    error_kind: int = -1  # the kind of the task's last ``error`` event; -1: none


@dataclass(frozen=True)
class TaskUndelivered:
    """A task could not be written to its runner: the job goes back to the queue."""

    job_id: str
    runner_id: str
    now: float


@dataclass(frozen=True)
class RunnerUp:
    """A runner said hello: it is connected (for the first time, or again)."""

    runner_id: str
    pool: Pool
    now: float
    current_job: str = ""  # the job of its last task
    busy: bool = False  # still running that task
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunnerDown:
    """A runner's connection ended; its process may live on and reconnect."""

    runner_id: str
    now: float


@dataclass(frozen=True)
class RunnerExited:
    """A runner's process ended (or was given up on); ``how`` says how, in words."""

    runner_id: str
    now: float
    how: str
    log_tail: str = ""  # the end of its log, for a runner that never connected


@dataclass(frozen=True)
class RunnerStartFailed:
    runner_id: str
    now: float
    message: str


@dataclass(frozen=True)
class Closing:
    """The control plane is stopping: start no runner, wait for none to reconnect."""

    now: float


Event = (
    JobSubmitted
    | JobReady
    | JobRestored
    | JobFailed
    | CancelRequested
    | TaskFinished
    | TaskUndelivered
    | RunnerUp
    | RunnerDown
    | RunnerExited
    | RunnerStartFailed
    | Closing
    | Tick
    | Prewarm
)

# ----------------------------------------------------------------- instructions


@dataclass(frozen=True)
class SendTask:
    """Give the job's task to the runner: attempt ``attempt`` starts now."""

    job_id: str
    runner_id: str
    attempt: int


@dataclass(frozen=True)
class Interrupt:
    """Ask the runner to interrupt the job's cell."""

    job_id: str
    runner_id: str
    reason: str
    timeout: bool = False


@dataclass(frozen=True)
class KillRunner:
    runner_id: str
    reason: str


@dataclass(frozen=True)
class Retrying:
    """Attempt ``attempt`` failed; the job is queued again after ``delay`` seconds."""

    job_id: str
    attempt: int
    message: str
    delay: float


@dataclass(frozen=True)
class JobEnded:
    """The job ended. ``by_runner``: the runner's own ``finished`` event says so."""

    job_id: str
    state: int  # pb.SUCCEEDED, pb.FAILED or pb.CANCELLED
    message: str
    failure: Failure | None = None
    by_runner: bool = False


Instruction = (
    StartRunner | StopRunner | Waiting | SendTask | Interrupt | KillRunner | Retrying | JobEnded
)
