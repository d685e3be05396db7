"""Which job runs where, and which runners to start and stop: pure decisions.

The scheduler sees events (a job queued, a runner connected, a task finished, a clock
tick) and returns instructions (assign, start a runner, stop a runner). It does no I/O
and reads no clock; the control plane's controller carries the instructions out. Tests
feed events and check instructions, with no sleeping.

Runners belong to a *pool* (image, session): a job runs only on a runner of its pool.
A ``session`` pool holds one runner that keeps its namespace between cells.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Pool:
    """Runners that can take each other's jobs: same image, session and resources."""

    image: str = ""
    session: str = ""
    cpu: float = 0.0  # cores; 0: no limit asked
    memory_mb: int = 0  # MiB; 0: no limit asked


# ----------------------------------------------------------------- events


@dataclass(frozen=True)
class JobQueued:
    job_id: str
    pool: Pool
    now: float
    front: bool = False  # a retried job goes ahead of the queue


@dataclass(frozen=True)
class JobDequeued:  # cancelled while queued
    job_id: str
    now: float


@dataclass(frozen=True)
class TaskDone:  # the runner's task ended; the runner is free again
    runner_id: str
    now: float


@dataclass(frozen=True)
class RunnerConnected:
    runner_id: str
    pool: Pool
    now: float
    busy_with: str = ""  # after a control-plane restart: the job it still runs


@dataclass(frozen=True)
class RunnerGone:
    runner_id: str
    now: float


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class Prewarm:
    """Start runners of the default pool ahead of any job (they scale down as usual)."""

    count: int
    now: float


Event = JobQueued | JobDequeued | TaskDone | RunnerConnected | RunnerGone | Tick | Prewarm

# ----------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Assign:
    job_id: str
    runner_id: str


@dataclass(frozen=True)
class StartRunner:
    runner_id: str
    pool: Pool


@dataclass(frozen=True)
class StopRunner:
    runner_id: str
    reason: str


@dataclass(frozen=True)
class Waiting:
    """A job cannot start yet; ``message`` says why (shown to the user once)."""

    job_id: str
    message: str


Instruction = Assign | StartRunner | StopRunner | Waiting


@dataclass
class _Runner:
    id: str
    pool: Pool
    state: Literal["starting", "idle", "busy"]
    since: float
    job: str = ""


@dataclass
class SchedulerConfig:
    scaledown_window: float = 60.0
    session_idle_timeout: float = 1800.0
    min_containers: int = 0
    max_runners: int = 8
    default_image: str = ""
    #: Runner ids are ``r-{prefix}{n}``; a control plane picks a fresh prefix per start so
    #: new runners never collide with runners that reconnect after a restart.
    id_prefix: str = ""


@dataclass
class Scheduler:
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    _queue: deque[tuple[str, Pool]] = field(default_factory=deque)
    _runners: dict[str, _Runner] = field(default_factory=dict)
    _told_waiting: set[str] = field(default_factory=set)
    _counter: int = 0

    # -- queries (for status and tests) ------------------------------------

    def position(self, job_id: str) -> int:
        """How many jobs of the same pool are ahead of this one (-1 if not queued)."""
        pool = next((p for j, p in self._queue if j == job_id), None)
        if pool is None:
            return -1
        ahead = 0
        for j, p in self._queue:
            if j == job_id:
                return ahead
            ahead += p == pool
        return -1

    @property
    def queued(self) -> list[str]:
        return [j for j, _ in self._queue]

    def queued_in(self, pool: Pool) -> list[str]:
        return [j for j, p in self._queue if p == pool]

    def runner_state(self, runner_id: str) -> str:
        r = self._runners.get(runner_id)
        return r.state if r else "gone"

    # -- the one entry point --------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        out: list[Instruction] = []
        if isinstance(event, JobQueued):
            item = (event.job_id, event.pool)
            if event.front:
                self._queue.appendleft(item)
            else:
                self._queue.append(item)
        elif isinstance(event, JobDequeued):
            self._queue = deque(i for i in self._queue if i[0] != event.job_id)
            self._told_waiting.discard(event.job_id)
        elif isinstance(event, TaskDone):
            r = self._runners.get(event.runner_id)
            if r is not None:
                r.state, r.since, r.job = "idle", event.now, ""
        elif isinstance(event, RunnerConnected):
            r = self._runners.get(event.runner_id)
            if r is None:
                r = _Runner(event.runner_id, event.pool, "idle", event.now)
                self._runners[event.runner_id] = r
            r.pool = event.pool
            if event.busy_with:
                r.state, r.job = "busy", event.busy_with
            else:
                r.state, r.since = "idle", event.now
        elif isinstance(event, RunnerGone):
            self._runners.pop(event.runner_id, None)
        elif isinstance(event, Prewarm):
            pool = Pool(self.config.default_image)
            for _ in range(event.count):
                if len(self._runners) >= self.config.max_runners:
                    break
                runner_id = f"r-{self._new_id()}"
                self._runners[runner_id] = _Runner(runner_id, pool, "starting", event.now)
                out.append(StartRunner(runner_id, pool))
        out += self._place(event.now)
        if isinstance(event, Tick):
            out += self._scale(event.now)
        return out

    # -- decisions --------------------------------------------------------------

    def _new_id(self) -> str:
        self._counter += 1
        return f"{self.config.id_prefix}{self._counter}"

    def _place(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        idle: dict[Pool, list[_Runner]] = {}
        starting: dict[Pool, int] = {}
        for r in self._runners.values():
            if r.state == "idle":
                idle.setdefault(r.pool, []).append(r)
            elif r.state == "starting":
                starting[r.pool] = starting.get(r.pool, 0) + 1
        remaining: deque[tuple[str, Pool]] = deque()
        for job_id, pool in self._queue:
            free = idle.get(pool)
            if free:
                # The most recently used runner first: its caches are warmest.
                runner = max(free, key=lambda r: r.since)
                free.remove(runner)
                runner.state, runner.job = "busy", job_id
                self._told_waiting.discard(job_id)
                out.append(Assign(job_id, runner.id))
                continue
            remaining.append((job_id, pool))
            if starting.get(pool, 0) > 0:
                starting[pool] -= 1  # this job will take a runner already starting
                self._wait(job_id, "waiting for a runner to start", out)
                continue
            if pool.session and self._session_runner_busy(pool):
                self._wait(job_id, f"waiting for session {pool.session!r}: its runner is busy", out)
                continue
            if self._make_room(now, out):
                runner_id = f"r-{self._new_id()}"
                self._runners[runner_id] = _Runner(runner_id, pool, "starting", now)
                out.append(StartRunner(runner_id, pool))
                self._wait(job_id, "starting a runner", out)
            else:
                busy = sum(r.state == "busy" for r in self._runners.values())
                self._wait(
                    job_id,
                    f"waiting for a free runner: all {self.config.max_runners} are busy "
                    f"({busy} running), {self.position(job_id)} ahead",
                    out,
                )
        self._queue = remaining
        return out

    def _session_runner_busy(self, pool: Pool) -> bool:
        return any(r.pool == pool for r in self._runners.values())

    def _wait(self, job_id: str, message: str, out: list[Instruction]) -> None:
        if job_id not in self._told_waiting:
            self._told_waiting.add(job_id)
            out.append(Waiting(job_id, message))

    def _make_room(self, now: float, out: list[Instruction]) -> bool:
        if len(self._runners) < self.config.max_runners:
            return True
        idle = [r for r in self._runners.values() if r.state == "idle"]
        if not idle:
            return False
        victim = min(idle, key=lambda r: r.since)
        del self._runners[victim.id]
        out.append(StopRunner(victim.id, "making room for a runner of another image or session"))
        return True

    def _scale(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        default = Pool(self.config.default_image)
        warm = [r for r in self._runners.values() if r.pool == default]
        for r in sorted(self._runners.values(), key=lambda r: r.since):
            if r.state != "idle":
                continue
            if r.pool.session:
                if now - r.since >= self.config.session_idle_timeout:
                    del self._runners[r.id]
                    out.append(StopRunner(r.id, f"session idle for {now - r.since:.0f} s"))
                continue
            if now - r.since < self.config.scaledown_window:
                continue
            if r.pool == default and len(warm) <= self.config.min_containers:
                continue
            del self._runners[r.id]
            if r in warm:
                warm.remove(r)
            out.append(StopRunner(r.id, f"idle for {now - r.since:.0f} s"))
        missing = self.config.min_containers - len(warm)
        for _ in range(max(0, missing)):
            if len(self._runners) >= self.config.max_runners:
                break
            runner_id = f"r-{self._new_id()}"
            self._runners[runner_id] = _Runner(runner_id, default, "starting", now)
            out.append(StartRunner(runner_id, default))
        return out
