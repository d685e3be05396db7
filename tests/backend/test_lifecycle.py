"""The job lifecycle's decisions, fed events with a fake clock: nothing sleeps.

The first tests walk one path each (a timeout, a cancel, a retry, a lost runner); the
property test at the end feeds random event sequences to the lifecycle and a model of
the runners it drives, and checks the invariants after every step and at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remotecell._proto import pb
from remotecell.backend.scheduler.lifecycle import Lifecycle
from remotecell.backend.scheduler.lifecycle_events import (
    CancelRequested,
    Failure,
    Interrupt,
    JobEnded,
    JobFailed,
    JobReady,
    JobRestored,
    JobSubmitted,
    KillRunner,
    LifecycleConfig,
    Retrying,
    RunnerDown,
    RunnerExited,
    RunnerStartFailed,
    RunnerUp,
    SendTask,
    TaskFinished,
)
from remotecell.backend.scheduler.policy import RunnerPolicy
from remotecell.backend.scheduler.queue import (
    Pool,
    SchedulerConfig,
    StartRunner,
    StopRunner,
    Tick,
    Waiting,
)

POOL = Pool()


def lifecycle(**queue: object) -> Lifecycle:
    return Lifecycle(
        LifecycleConfig(
            cancel_grace=5.0,
            reconnect_grace=15.0,
            stop_grace=5.0,
            retry_delay=1.0,
            queue=SchedulerConfig(
                RunnerPolicy(**{"scaledown_window": 60.0, "max_runners": 2, **queue})  # type: ignore[arg-type]
            ),
        )
    )


def submit(lc: Lifecycle, job_id: str, now: float = 0.0, **kw: object) -> list:
    lc.handle(JobSubmitted(job_id, POOL, now, **kw))  # type: ignore[arg-type]
    return lc.handle(JobReady(job_id, now))


def of(kind: type, out: list) -> list:
    return [i for i in out if isinstance(i, kind)]


def warm_runner(lc: Lifecycle, now: float = 0.0) -> str:
    """Runs a job to the end so that one runner is connected and idle; returns its id."""
    start = of(StartRunner, submit(lc, "warm", now))[0]
    sent = of(SendTask, lc.handle(RunnerUp(start.runner_id, POOL, now)))
    assert sent == [SendTask("warm", start.runner_id, 1)]
    lc.handle(TaskFinished(start.runner_id, "warm", pb.SUCCEEDED, "", now))
    return start.runner_id


def test_a_job_submitted_while_its_idle_runner_is_away_waits_for_it_and_then_runs():
    lc = lifecycle(max_runners=1)
    runner = warm_runner(lc)
    lc.handle(RunnerDown(runner, 1.0))
    out = submit(lc, "job", 1.5)
    assert not of(SendTask, out) and not of(StartRunner, out)
    assert "1 reconnecting" in of(Waiting, out)[0].message
    out = lc.handle(RunnerUp(runner, POOL, 2.0))
    assert of(SendTask, out) == [SendTask("job", runner, 1)]


def test_a_runner_that_does_not_reconnect_is_killed_and_its_job_retried_elsewhere():
    lc = lifecycle()
    runner = warm_runner(lc)
    out = submit(lc, "job", 1.0, retries=1)
    assert of(SendTask, out) == [SendTask("job", runner, 1)]
    lc.handle(RunnerDown(runner, 2.0))
    assert lc.next_deadline() == 17.0
    assert lc.handle(Tick(16.9)) == []
    assert of(KillRunner, lc.handle(Tick(17.0))) == [KillRunner(runner, "it did not reconnect")]
    out = lc.handle(RunnerExited(runner, 17.5, "it was killed by SIGKILL"))
    retry = of(Retrying, out)
    assert retry == [
        Retrying("job", 1, "the runner running this cell died: it was killed by SIGKILL", 1.0)
    ]
    start = of(StartRunner, lc.handle(Tick(18.5)))
    assert len(start) == 1
    out = lc.handle(RunnerUp(start[0].runner_id, POOL, 19.0))
    assert of(SendTask, out) == [SendTask("job", start[0].runner_id, 2)]


def test_a_runner_that_reconnects_in_time_keeps_its_job():
    lc = lifecycle()
    runner = warm_runner(lc)
    submit(lc, "job", 1.0)
    lc.handle(RunnerDown(runner, 2.0))
    out = lc.handle(RunnerUp(runner, POOL, 3.0, current_job="job", busy=True))
    assert out == []
    assert lc.handle(Tick(100.0)) == []
    out = lc.handle(TaskFinished(runner, "job", pb.SUCCEEDED, "done", 101.0))
    assert of(JobEnded, out) == [JobEnded("job", pb.SUCCEEDED, "done", None, by_runner=True)]


def test_a_timeout_interrupts_the_cell_then_kills_a_runner_that_ignores_it():
    lc = lifecycle()
    runner = warm_runner(lc)
    submit(lc, "job", 10.0, timeout_s=30.0)
    assert lc.handle(Tick(39.0)) == []
    reason = "the cell ran longer than its timeout of 30 s"
    assert lc.handle(Tick(40.0)) == [Interrupt("job", runner, reason, timeout=True)]
    assert of(KillRunner, lc.handle(Tick(45.0)))[0].runner_id == runner
    out = lc.handle(RunnerExited(runner, 45.1, "it was killed by SIGKILL"))
    ended = of(JobEnded, out)[0]
    assert ended.state == pb.FAILED
    assert ended.failure == Failure(
        pb.Error.TIMEOUT, "TimeoutError", f"{reason}; its runner was killed"
    )


def test_a_cancel_interrupts_and_the_runners_own_end_ends_the_job():
    lc = lifecycle()
    runner = warm_runner(lc)
    submit(lc, "job", 1.0, retries=3)
    assert lc.handle(CancelRequested("job", "by the user", 2.0)) == [
        Interrupt("job", runner, "by the user")
    ]
    out = lc.handle(
        TaskFinished(runner, "job", pb.FAILED, "KeyboardInterrupt", 3.0, pb.Error.USER_CODE)
    )
    # A cancelled job is not retried, whatever its retries.
    assert of(JobEnded, out) == [JobEnded("job", pb.FAILED, "KeyboardInterrupt", None, True)]
    assert lc.handle(Tick(10.0)) == []  # no kill after the job ended


def test_a_cell_that_ignores_its_cancel_gets_its_runner_killed_and_the_job_says_so():
    lc = lifecycle()
    runner = warm_runner(lc)
    submit(lc, "job", 1.0)
    lc.handle(CancelRequested("job", "cancelled by the user", 2.0))
    assert of(KillRunner, lc.handle(Tick(7.0)))[0].runner_id == runner
    ended = of(JobEnded, lc.handle(RunnerExited(runner, 7.5, "it was killed by SIGKILL")))[0]
    assert ended.state == pb.CANCELLED
    assert "did not stop within 5 s of the interrupt" in ended.message


def test_a_cancel_while_queued_or_while_the_image_builds_ends_at_once():
    lc = lifecycle(max_runners=0)
    submit(lc, "queued", 0.0)
    lc.handle(JobSubmitted("building", POOL, 0.0))
    for job_id in ("queued", "building"):
        out = lc.handle(CancelRequested(job_id, "by the user", 1.0))
        assert out == [JobEnded(job_id, pb.CANCELLED, "cancelled before it started: by the user")]
    assert lc.handle(JobReady("building", 2.0)) == []


def test_retries_back_off_doubling_and_every_attempt_is_counted():
    lc = lifecycle()
    runner = warm_runner(lc)
    submit(lc, "job", 0.0, retries=2)
    now, attempts = 0.0, []
    for attempt, delay in ((1, 1.0), (2, 2.0)):
        out = lc.handle(TaskFinished(runner, "job", pb.FAILED, "boom", now, pb.Error.USER_CODE))
        assert of(Retrying, out) == [Retrying("job", attempt, "boom", delay)]
        assert not of(SendTask, lc.handle(Tick(now + delay - 0.01)))
        sent = of(SendTask, lc.handle(Tick(now + delay)))
        attempts += [s.attempt for s in sent]
        now += delay
    assert attempts == [2, 3]
    out = lc.handle(TaskFinished(runner, "job", pb.FAILED, "boom", now, pb.Error.USER_CODE))
    assert of(JobEnded, out) == [JobEnded("job", pb.FAILED, "boom", None, True)]


def test_a_setup_failure_is_not_retried():
    lc = lifecycle()
    runner = warm_runner(lc)
    submit(lc, "job", 0.0, retries=2)
    out = lc.handle(TaskFinished(runner, "job", pb.FAILED, "no module", 1.0, pb.Error.SETUP))
    assert of(JobEnded, out)[0].state == pb.FAILED and not of(Retrying, out)


def test_a_restored_job_whose_runner_never_returns_is_retried_after_the_grace():
    lc = lifecycle()
    out = lc.handle(JobRestored("job", POOL, 100.0, "r-old", 1, 90.0, retries=1))
    assert out == []
    out = lc.handle(Tick(115.0))
    assert of(Retrying, out)[0].message.startswith(
        "the runner running this cell did not reconnect within 15 s"
    )
    # Its place is given up: a new runner can start for the retry.
    assert of(StartRunner, lc.handle(Tick(116.0)))


def test_a_restored_job_whose_runner_returns_finishes_there():
    lc = lifecycle()
    lc.handle(JobRestored("job", POOL, 100.0, "r-old", 1, 90.0))
    assert lc.handle(RunnerUp("r-old", POOL, 101.0, current_job="job", busy=True)) == []
    assert lc.handle(Tick(200.0)) == []
    out = lc.handle(TaskFinished("r-old", "job", pb.SUCCEEDED, "", 201.0))
    assert of(JobEnded, out)[0].state == pb.SUCCEEDED


def test_a_runner_back_with_a_cell_that_ended_here_is_interrupted_then_killed():
    lc = lifecycle()
    runner = warm_runner(lc)
    submit(lc, "job", 0.0)
    lc.handle(RunnerDown(runner, 1.0))
    assert of(JobEnded, lc.handle(CancelRequested("job", "by the user", 2.0)))
    out = lc.handle(RunnerUp(runner, POOL, 3.0, current_job="job", busy=True))
    assert out == [Interrupt("job", runner, "the job already ended")]
    assert of(KillRunner, lc.handle(Tick(8.0)))[0].runner_id == runner


def test_a_runner_back_with_a_stale_cell_that_then_ends_is_spared_and_free():
    lc = lifecycle()
    runner = warm_runner(lc)
    submit(lc, "job", 0.0)
    lc.handle(RunnerDown(runner, 1.0))
    lc.handle(CancelRequested("job", "by the user", 2.0))
    lc.handle(RunnerUp(runner, POOL, 3.0, current_job="job", busy=True))
    lc.handle(TaskFinished(runner, "job", pb.CANCELLED, "", 4.0))
    assert lc.handle(Tick(8.0)) == []
    assert of(SendTask, submit(lc, "next", 9.0)) == [SendTask("next", runner, 1)]


def test_a_stopped_runner_is_killed_when_it_outlives_its_grace():
    lc = lifecycle()
    runner = warm_runner(lc)
    out = lc.handle(Tick(61.0))
    assert of(StopRunner, out)[0].runner_id == runner
    assert lc.handle(Tick(65.0)) == []
    assert of(KillRunner, lc.handle(Tick(66.0))) == [
        KillRunner(runner, "it did not stop within 5 s")
    ]


def test_a_runner_that_ends_before_connecting_fails_the_jobs_waiting_for_it():
    lc = lifecycle()
    start = of(StartRunner, submit(lc, "job", 0.0))[0]
    out = lc.handle(RunnerExited(start.runner_id, 1.0, "it exited with code 1", "ImportError"))
    ended = of(JobEnded, out)[0]
    assert ended.failure is not None and ended.failure.type_name == "RunnerStartError"
    assert ended.message.endswith("(it exited with code 1); its log ends with:\nImportError")


def test_a_runner_that_cannot_be_started_fails_the_jobs_waiting_for_it():
    lc = lifecycle()
    start = of(StartRunner, submit(lc, "job", 0.0))[0]
    out = lc.handle(RunnerStartFailed(start.runner_id, 1.0, "no such image"))
    assert of(JobEnded, out)[0].message == "no such image"


def test_a_job_failed_in_setup_frees_its_runner():
    lc = lifecycle(max_runners=1)
    runner = warm_runner(lc)
    submit(lc, "job", 1.0)
    submit(lc, "next", 1.0)
    out = lc.handle(JobFailed("job", Failure(pb.Error.SETUP, "SecretError", "gone"), 2.0))
    assert of(JobEnded, out)[0].failure == Failure(pb.Error.SETUP, "SecretError", "gone")
    assert of(SendTask, out) == [SendTask("next", runner, 1)]


# ---------------------------------------------------------------- the property test


@dataclass
class World:
    """The runners as the lifecycle's shell would see them, driven by its instructions."""

    lc: Lifecycle
    now: float = 0.0
    runners: list[str] = field(default_factory=list)  # started, in order
    alive: set[str] = field(default_factory=set)
    connected: set[str] = field(default_factory=set)
    task: dict[str, str] = field(default_factory=dict)  # runner -> job it runs
    jobs: dict[str, int] = field(default_factory=dict)  # job -> retries
    sends: dict[str, list[int]] = field(default_factory=dict)  # job -> attempts sent
    retries_told: dict[str, list[int]] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)
    to_exit: list[str] = field(default_factory=list)  # asked to stop or killed

    def feed(self, event: object) -> None:
        for ins in self.lc.handle(event):  # type: ignore[arg-type]
            self.carry(ins)

    def carry(self, ins: object) -> None:
        if isinstance(ins, StartRunner):
            assert ins.runner_id not in self.runners
            self.runners.append(ins.runner_id)
            self.alive.add(ins.runner_id)
        elif isinstance(ins, SendTask):
            assert ins.job_id not in self.ended, f"task for ended job {ins.job_id}"
            assert ins.runner_id in self.connected, "a task for a runner that is not connected"
            assert ins.runner_id not in self.task, (
                f"runner {ins.runner_id} given {ins.job_id} while it runs {self.task[ins.runner_id]}"
            )
            self.task[ins.runner_id] = ins.job_id
            sent = self.sends.setdefault(ins.job_id, [])
            sent.append(ins.attempt)
            assert sent == list(range(1, len(sent) + 1)), f"attempts {sent}"
            assert len(sent) <= self.jobs[ins.job_id] + 1, "more attempts than retries allow"
        elif isinstance(ins, Retrying):
            assert ins.job_id not in self.ended
            self.retries_told.setdefault(ins.job_id, []).append(ins.attempt)
        elif isinstance(ins, JobEnded):
            assert ins.job_id not in self.ended, f"{ins.job_id} ended twice"
            assert ins.state in (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)
            self.ended[ins.job_id] = ins.state
        elif isinstance(ins, (StopRunner, KillRunner)) and ins.runner_id in self.alive:
            self.to_exit.append(ins.runner_id)

    def exit(self, runner: str, how: str = "it exited with code 0") -> None:
        if runner in self.alive:
            self.alive.discard(runner)
            self.connected.discard(runner)
            self.task.pop(runner, None)
            self.feed(RunnerExited(runner, self.now, how))

    def up(self, runner: str) -> None:
        if runner in self.alive and runner not in self.connected:
            self.connected.add(runner)
            job = self.task.get(runner, "")
            self.feed(RunnerUp(runner, POOL, self.now, current_job=job, busy=bool(job)))

    def finish(self, runner: str, state: int, kind: int) -> None:
        job = self.task.get(runner)
        if job is not None and runner in self.connected:
            del self.task[runner]
            self.feed(TaskFinished(runner, job, state, "the end", self.now, kind))

    def active(self) -> list[str]:
        return [j for j in self.jobs if j not in self.ended]


ACTIONS = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 2), st.sampled_from([0.0, 5.0])),
    st.tuples(st.just("cancel"), st.integers(0, 9)),
    st.tuples(st.just("fail"), st.integers(0, 9)),
    st.tuples(st.just("up"), st.integers(0, 5)),
    st.tuples(st.just("down"), st.integers(0, 5)),
    st.tuples(st.just("exit"), st.integers(0, 5)),
    st.tuples(st.just("startfail"), st.integers(0, 5)),
    st.tuples(
        st.just("finish"),
        st.integers(0, 5),
        st.sampled_from([pb.SUCCEEDED, pb.FAILED, pb.CANCELLED]),
        st.sampled_from([-1, pb.Error.USER_CODE, pb.Error.SETUP, pb.Error.TIMEOUT]),
    ),
    st.tuples(
        st.just("obey"),
    ),  # runners asked to stop or killed do end
    st.tuples(st.just("tick"), st.floats(0.0, 30.0)),
)


def step(world: World, action: tuple) -> None:
    name = action[0]
    pick = lambda items, i: items[i % len(items)] if items else None  # noqa: E731
    if name == "submit":
        job = f"job-{len(world.jobs)}"
        world.jobs[job] = action[1]
        world.feed(JobSubmitted(job, POOL, world.now, retries=action[1], timeout_s=action[2]))
        world.feed(JobReady(job, world.now))
    elif name in ("cancel", "fail"):
        job = pick(world.active(), action[1])
        if job is not None and name == "cancel":
            world.feed(CancelRequested(job, "by the user", world.now))
        elif job is not None and world.lc.job_state(job) == pb.QUEUED:
            # A job fails in setup before its task reaches a runner (its image, its
            # secrets); once a runner has the task, the runner's end decides.
            world.feed(JobFailed(job, Failure(pb.Error.SETUP, "ImageBuildError", "x"), world.now))
    elif name in ("up", "down", "exit", "startfail", "finish"):
        runner = pick(sorted(world.alive), action[1])
        if runner is None:
            return
        if name == "up":
            world.up(runner)
        elif name == "down" and runner in world.connected:
            world.connected.discard(runner)
            world.feed(RunnerDown(runner, world.now))
        elif name == "exit":
            world.exit(runner, "it was killed by SIGKILL")
        elif name == "startfail" and not world.lc.runner_ever_connected(runner):
            world.alive.discard(runner)
            world.feed(RunnerStartFailed(runner, world.now, "could not start"))
        elif name == "finish":
            world.finish(runner, action[2], action[3])
    elif name == "obey":
        while world.to_exit:
            world.exit(world.to_exit.pop(0), "it was stopped")
    elif name == "tick":
        world.now += action[1]
        world.feed(Tick(world.now))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, max_size=60))
def test_random_histories_end_every_job_and_never_double_book_a_runner(actions):
    world = World(lifecycle(max_runners=2, scaledown_window=20.0))
    for action in actions:
        step(world, action)
        running = {}
        for runner, job in world.task.items():
            assert job not in running, f"{job} runs on {running.get(job)} and {runner}"
            running[job] = runner

    # Then the world behaves: runners connect, cells finish, stopped runners stop, time
    # passes. Every job must end, with no runner ever holding two.
    for _ in range(100):
        if not world.active():
            break
        while world.to_exit:
            world.exit(world.to_exit.pop(0), "it was stopped")
        for runner in sorted(world.alive):
            world.up(runner)
        for runner in sorted(world.task):
            world.finish(runner, pb.SUCCEEDED, -1)
        world.now += 30.0
        world.feed(Tick(world.now))
    assert not world.active(), f"stuck: {[(j, world.lc.job_state(j)) for j in world.active()]}"
    for job, retries in world.jobs.items():
        sent = world.sends.get(job, [])
        told = world.retries_told.get(job, [])
        # Every retry is counted: each one announced follows a failed attempt, and the
        # attempts sent are 1, 2, ... with at most ``retries`` after the first.
        assert told == list(range(1, len(told) + 1))
        assert len(sent) <= retries + 1
        assert len(told) <= len(sent)
