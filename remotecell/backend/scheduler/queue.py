"""Which job runs where, and which runners to start and stop: pure decisions.

The scheduler sees events (a job queued, a runner connected, a task finished, a clock
tick) and returns instructions (assign, start a runner, stop a runner). It does no I/O
and reads no clock; the control plane's controller carries the instructions out. Tests
feed events and check instructions, with no sleeping.

Runners belong to a *pool* (image, session, resources, volumes): a job runs only on a
runner of its pool.
A ``session`` pool holds one runner that keeps its namespace between cells.

GPUs are exclusive to a runner: a runner holds the GPUs (by UUID) it was started with, and
its pool names their type and count (``GPUChoice("H100", 2)``), so a job asking for two
H100s runs only on a runner holding two H100s. A job's fallbacks are tried in order; jobs
are served in arrival order, so a later job never takes GPUs of a type an earlier job is
waiting for. A job no choice of which could ever fit this machine's GPUs fails at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

from remotecell.backend.scheduler.policy import RunnerPolicy
from remotecell.contract.resources import GPUChoice, GPURequest
from remotecell.contract.volumes import Mount


@dataclass(frozen=True)
class Pool:
    """Runners that can take each other's jobs: same image, session and resources."""

    image: str = ""
    session: str = ""
    cpu: float = 0.0  # cores; 0: no limit asked
    memory_mb: int = 0  # MiB; 0: no limit asked
    #: A runner's GPUs, e.g. ``GPUChoice("H100", 2)``; None for none (a job's GPUs are
    #: its request, not its pool).
    gpu: GPUChoice | None = None
    #: The volumes mounted in its runners (volume ids found), by path: mounts are fixed
    #: when a runner starts.
    volumes: tuple[Mount, ...] = ()
    #: The user its runners serve: a runner never serves two users, so warm reuse
    #: happens only within one user's pools.
    owner: str = ""


@dataclass(frozen=True)
class MachineGPU:
    """A GPU the scheduler may give a runner."""

    uuid: str
    type: str  # canonical, as the inventory names it
    name: str = ""  # NVML's name, for messages
    index: int = 0
    memory_total: int = 0  # bytes


# ----------------------------------------------------------------- events


@dataclass(frozen=True)
class JobQueued:
    job_id: str
    pool: Pool
    now: float
    front: bool = False  # a retried job goes ahead of the queue
    gpu: GPURequest | None = None


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
    gpus: tuple[str, ...] = ()  # UUIDs of the GPUs it holds


@dataclass(frozen=True)
class RunnerGone:
    runner_id: str
    now: float


@dataclass(frozen=True)
class RunnerAway:
    """A runner's connection dropped: it takes no job until ``RunnerConnected`` again."""

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


Event = (
    JobQueued | JobDequeued | TaskDone | RunnerConnected | RunnerGone | RunnerAway | Tick | Prewarm
)

# ----------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Assign:
    job_id: str
    runner_id: str


@dataclass(frozen=True)
class StartRunner:
    runner_id: str
    pool: Pool
    gpus: tuple[str, ...] = ()  # UUIDs of the GPUs it is to hold


@dataclass(frozen=True)
class StopRunner:
    runner_id: str
    reason: str


@dataclass(frozen=True)
class Waiting:
    """A job cannot start yet; ``message`` says why (shown to the user once)."""

    job_id: str
    message: str


@dataclass(frozen=True)
class Unplaceable:
    """A job can never run on this machine; ``message`` says why. It is not queued."""

    job_id: str
    message: str


Instruction = Assign | StartRunner | StopRunner | Waiting | Unplaceable


@dataclass(frozen=True)
class _Queued:
    job_id: str
    pool: Pool  # gpu is None: the job's GPUs are ``gpu``
    gpu: GPURequest | None = None


@dataclass
class _Runner:
    id: str
    pool: Pool
    state: Literal["starting", "idle", "busy"]
    since: float
    job: str = ""
    gpus: tuple[str, ...] = ()
    #: Its connection dropped: it counts against ``max_runners`` but takes no job.
    away: bool = False

    @property
    def free(self) -> bool:
        return self.state == "idle" and not self.away


@dataclass
class SchedulerConfig:
    runners: RunnerPolicy = field(default_factory=RunnerPolicy)
    default_image: str = ""
    #: The user prewarmed runners (of the default pool) serve: the data directory's owner.
    default_owner: str = ""
    #: Runner ids are ``r-{prefix}{n}``; a control plane picks a fresh prefix per start so
    #: new runners never collide with runners that reconnect after a restart.
    id_prefix: str = ""
    #: The GPUs runners may be given; none: GPU jobs fail at once.
    gpus: tuple[MachineGPU, ...] = ()


@dataclass
class Scheduler:
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    _queue: deque[_Queued] = field(default_factory=deque)
    _runners: dict[str, _Runner] = field(default_factory=dict)
    _told_waiting: set[str] = field(default_factory=set)
    _counter: int = 0

    # -- queries (for status and tests) ------------------------------------

    def position(self, job_id: str) -> int:
        """How many jobs competing with this one are ahead of it (-1 if not queued): jobs of
        the same pool, or for a GPU job, jobs that want a GPU of one of its types."""
        me = next((q for q in self._queue if q.job_id == job_id), None)
        if me is None:
            return -1
        ahead = 0
        for q in self._queue:
            if q.job_id == job_id:
                return ahead
            if me.gpu is None:
                ahead += q.gpu is None and q.pool == me.pool
            else:
                ahead += q.gpu is not None and bool(self._types(q.gpu) & self._types(me.gpu))
        return -1

    @property
    def queued(self) -> list[str]:
        return [q.job_id for q in self._queue]

    def gpu_holders(self) -> dict[str, str]:
        """Which runner holds each GPU, by UUID (free GPUs are absent)."""
        return {uuid: r.id for r in self._runners.values() for uuid in r.gpus}

    def queued_in(self, pool: Pool) -> list[str]:
        """Jobs a runner of ``pool`` would serve."""
        return [q.job_id for q in self._queue if pool in self._pools_for(q)]

    def runner_state(self, runner_id: str) -> str:
        r = self._runners.get(runner_id)
        return r.state if r else "gone"

    def never_fits(self, request: GPURequest | None) -> str:
        """Why ``request`` can never run on this machine, or "" when it can.

        A pure query: the control plane asks it before it records a job, so such a request
        is refused at submit instead of recorded as a failed job.
        """
        if request is None:
            return ""
        have = [g.type for g in self.config.gpus]
        if any(have.count(t) >= c.count for c in request.choices for t in self._concrete(c)):
            return ""
        if not have:
            there = "this machine has no GPUs (NVML finds none)"
        else:
            counts = {t: have.count(t) for t in self._machine_types()}
            there = "this machine has " + ", ".join(f"{n} {t}" for t, n in counts.items())
        return (
            f'gpu="{request}" can never run here: {there}; ask for what it has, '
            "or run on a machine with the GPUs you need"
        )

    # -- the one entry point --------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        out: list[Instruction] = []
        if isinstance(event, JobQueued):
            item = _Queued(event.job_id, event.pool, event.gpu)
            never = self.never_fits(event.gpu)
            if never:
                return [Unplaceable(event.job_id, never)]
            if event.front:
                self._queue.appendleft(item)
            else:
                self._queue.append(item)
        elif isinstance(event, JobDequeued):
            self._queue = deque(q for q in self._queue if q.job_id != event.job_id)
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
            r.pool, r.gpus, r.away = event.pool, event.gpus, False
            if event.busy_with:
                r.state, r.job = "busy", event.busy_with
            else:
                r.state, r.since = "idle", event.now
        elif isinstance(event, RunnerGone):
            self._runners.pop(event.runner_id, None)
        elif isinstance(event, RunnerAway):
            r = self._runners.get(event.runner_id)
            if r is not None:
                r.away = True
        elif isinstance(event, Prewarm):
            pool = Pool(self.config.default_image, owner=self.config.default_owner)
            for _ in range(event.count):
                if len(self._runners) >= self.config.runners.max_runners:
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
            if r.free:
                idle.setdefault(r.pool, []).append(r)
            elif r.state == "starting":
                starting[r.pool] = starting.get(r.pool, 0) + 1
        remaining: deque[_Queued] = deque()
        waited_for: set[str] = set()  # GPU types earlier jobs wait for: later ones queue behind
        for q in self._queue:
            pools = self._pools_for(q)
            free = next((idle[p] for p in pools if idle.get(p)), None)
            if free:
                # The most recently used runner first: its caches are warmest.
                runner = max(free, key=lambda r: r.since)
                free.remove(runner)
                runner.state, runner.job = "busy", q.job_id
                self._told_waiting.discard(q.job_id)
                out.append(Assign(q.job_id, runner.id))
                continue
            remaining.append(q)
            pool = next((p for p in pools if starting.get(p, 0) > 0), None)
            if pool is not None:
                starting[pool] -= 1  # this job will take a runner already starting
                self._wait(q.job_id, "waiting for a runner to start", out)
                continue
            if q.pool.session and self._session_runner_busy(q.pool):
                self._wait(
                    q.job_id, f"waiting for session {q.pool.session!r}: its runner is busy", out
                )
                continue
            if q.gpu is not None:
                started = self._start_gpu_runner(q, pools, waited_for, now, out)
                if not started:
                    types = self._types(q.gpu)
                    waited_for |= types
                    ahead = sum(
                        1
                        for r in remaining
                        if r is not q and r.gpu is not None and self._types(r.gpu) & types
                    )
                    self._wait(q.job_id, f"waiting for {q.gpu} — {ahead} jobs ahead", out)
                continue
            if self._make_room(now, out):
                runner_id = f"r-{self._new_id()}"
                self._runners[runner_id] = _Runner(runner_id, q.pool, "starting", now)
                out.append(StartRunner(runner_id, q.pool))
                self._wait(q.job_id, "starting a runner", out)
            else:
                busy = sum(r.state == "busy" for r in self._runners.values())
                away = sum(r.away for r in self._runners.values())
                self._wait(
                    q.job_id,
                    f"waiting for a free runner: all {self.config.runners.max_runners} are busy "
                    f"({busy} running" + (f", {away} reconnecting" if away else "") + "), "
                    f"{self.position(q.job_id)} ahead",
                    out,
                )
        self._queue = remaining
        return out

    # -- GPUs ---------------------------------------------------------------------

    def _machine_types(self) -> list[str]:
        return list(dict.fromkeys(g.type for g in self.config.gpus))

    def _concrete(self, choice: GPUChoice) -> list[str]:
        """The machine's types that serve ``choice``, in preference order."""
        return [t for t in self._machine_types() if choice.accepts(t)]

    def _types(self, request: GPURequest) -> set[str]:
        return {t for c in request.choices for t in self._concrete(c)}

    def _pools_for(self, q: _Queued) -> list[Pool]:
        """The pools whose runners can run ``q``, best first (fallbacks in order)."""
        if q.gpu is None:
            return [q.pool]
        return [
            replace(q.pool, gpu=GPUChoice(t, c.count))
            for c in q.gpu.choices
            for t in self._concrete(c)
        ]

    def _start_gpu_runner(
        self,
        q: _Queued,
        pools: list[Pool],
        waited_for: set[str],
        now: float,
        out: list[Instruction],
    ) -> bool:
        assert q.gpu is not None
        held = {u for r in self._runners.values() for u in r.gpus}
        for c in q.gpu.choices:
            for t in self._concrete(c):
                if t in waited_for:
                    continue  # an earlier job waits for this type: it goes first
                free = [g.uuid for g in self.config.gpus if g.type == t and g.uuid not in held]
                # Idle runners (not sessions, which keep a namespace) give back their GPUs.
                idle = sorted(
                    (
                        r
                        for r in self._runners.values()
                        if r.free
                        and not r.pool.session
                        and r.gpus
                        and all(g.type == t for g in self.config.gpus if g.uuid in r.gpus)
                    ),
                    key=lambda r: r.since,
                )
                reclaimable = len(free) + sum(len(r.gpus) for r in idle)
                if reclaimable < c.count:
                    continue
                for r in idle:
                    if len(free) >= c.count:
                        break
                    del self._runners[r.id]
                    out.append(StopRunner(r.id, f"giving its GPUs to a job that needs {c}"))
                    free += list(r.gpus)
                if not self._make_room(now, out):
                    return False
                pool = replace(q.pool, gpu=GPUChoice(t, c.count))
                gpus = tuple(free[: c.count])
                runner_id = f"r-{self._new_id()}"
                self._runners[runner_id] = _Runner(runner_id, pool, "starting", now, gpus=gpus)
                out.append(StartRunner(runner_id, pool, gpus))
                self._wait(q.job_id, f"starting a runner with {pool.gpu}", out)
                return True
        return False

    def _session_runner_busy(self, pool: Pool) -> bool:
        return any(replace(r.pool, gpu=None) == pool for r in self._runners.values())

    def _wait(self, job_id: str, message: str, out: list[Instruction]) -> None:
        if job_id not in self._told_waiting:
            self._told_waiting.add(job_id)
            out.append(Waiting(job_id, message))

    def _make_room(self, now: float, out: list[Instruction]) -> bool:
        if len(self._runners) < self.config.runners.max_runners:
            return True
        idle = [r for r in self._runners.values() if r.free]
        if not idle:
            return False
        victim = min(idle, key=lambda r: r.since)
        del self._runners[victim.id]
        out.append(StopRunner(victim.id, "making room for a runner of another image or session"))
        return True

    def _scale(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        default = Pool(self.config.default_image, owner=self.config.default_owner)
        warm = [r for r in self._runners.values() if r.pool == default]
        for r in sorted(self._runners.values(), key=lambda r: r.since):
            if not r.free:
                continue
            if r.pool.session:
                if now - r.since >= self.config.runners.session_idle_timeout:
                    del self._runners[r.id]
                    out.append(StopRunner(r.id, f"session idle for {now - r.since:.0f} s"))
                continue
            if now - r.since < self.config.runners.scaledown_window:
                continue
            if r.pool == default and len(warm) <= self.config.runners.min_containers:
                continue
            del self._runners[r.id]
            if r in warm:
                warm.remove(r)
            out.append(StopRunner(r.id, f"idle for {now - r.since:.0f} s"))
        missing = self.config.runners.min_containers - len(warm)
        for _ in range(max(0, missing)):
            if len(self._runners) >= self.config.runners.max_runners:
                break
            runner_id = f"r-{self._new_id()}"
            self._runners[runner_id] = _Runner(runner_id, default, "starting", now)
            out.append(StartRunner(runner_id, default))
        return out
