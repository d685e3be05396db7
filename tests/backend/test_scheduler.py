"""The scheduler's decisions: feed events, check instructions. No processes, no sleeping."""

from __future__ import annotations

from remotecell.backend.scheduler.policy import RunnerPolicy
from remotecell.backend.scheduler.queue import (
    Assign,
    JobDequeued,
    JobQueued,
    Pool,
    Prewarm,
    RunnerConnected,
    RunnerGone,
    Scheduler,
    SchedulerConfig,
    StartRunner,
    StopRunner,
    TaskDone,
    Tick,
    Waiting,
)

DEFAULT = Pool()


def kinds(instructions, kind):
    return [i for i in instructions if isinstance(i, kind)]


def connect_started(s: Scheduler, out, now=0.0):
    """Every StartRunner in ``out`` connects; returns what that produced."""
    produced = []
    for start in kinds(out, StartRunner):
        produced += s.handle(RunnerConnected(start.runner_id, start.pool, now))
    return produced


def test_first_job_starts_a_runner_and_runs_on_it_when_it_connects():
    s = Scheduler()
    out = s.handle(JobQueued("j1", DEFAULT, 0.0))
    (start,) = kinds(out, StartRunner)
    assert kinds(out, Waiting) == [Waiting("j1", "starting a runner")]
    assert kinds(out, Assign) == []
    out = s.handle(RunnerConnected(start.runner_id, DEFAULT, 0.5))
    assert out == [Assign("j1", start.runner_id)]


def test_a_warm_idle_runner_is_reused_without_starting_another():
    s = Scheduler()
    out = s.handle(JobQueued("j1", DEFAULT, 0.0))
    connect_started(s, out)
    runner = kinds(out, StartRunner)[0].runner_id
    s.handle(TaskDone(runner, 1.0))
    out = s.handle(JobQueued("j2", DEFAULT, 2.0))
    assert out == [Assign("j2", runner)]


def test_jobs_of_one_pool_run_in_arrival_order():
    s = Scheduler(SchedulerConfig(RunnerPolicy(max_runners=1)))
    out = s.handle(JobQueued("j1", DEFAULT, 0.0))
    out += s.handle(JobQueued("j2", DEFAULT, 0.1))
    out += s.handle(JobQueued("j3", DEFAULT, 0.2))
    assert len(kinds(out, StartRunner)) == 1
    runner = kinds(out, StartRunner)[0].runner_id
    assert s.handle(RunnerConnected(runner, DEFAULT, 1.0)) == [Assign("j1", runner)]
    assert s.position("j3") == 1
    assert s.handle(TaskDone(runner, 2.0)) == [Assign("j2", runner)]
    assert s.handle(TaskDone(runner, 3.0)) == [Assign("j3", runner)]


def test_waiting_is_said_once_per_job_with_the_reason():
    s = Scheduler(SchedulerConfig(RunnerPolicy(max_runners=1)))
    out = s.handle(JobQueued("j1", DEFAULT, 0.0))
    connect_started(s, out)
    out = s.handle(JobQueued("j2", DEFAULT, 1.0))
    (waiting,) = kinds(out, Waiting)
    assert waiting.job_id == "j2"
    assert "all 1 are busy" in waiting.message
    assert kinds(s.handle(Tick(2.0)), Waiting) == []


def test_a_retried_job_goes_to_the_front():
    s = Scheduler(SchedulerConfig(RunnerPolicy(max_runners=1)))
    out = s.handle(JobQueued("j1", DEFAULT, 0.0))
    s.handle(JobQueued("j2", DEFAULT, 0.0))
    runner = kinds(out, StartRunner)[0].runner_id
    s.handle(RunnerConnected(runner, DEFAULT, 0.0))  # j1 runs
    out = s.handle(RunnerGone(runner, 1.0))  # ... and its runner dies: j2 needs a new one
    (start,) = kinds(out, StartRunner)
    out = s.handle(JobQueued("j1", DEFAULT, 1.0, front=True))
    assert s.queued == ["j1", "j2"]
    assert kinds(out, StartRunner) == []  # at max_runners: j1 takes the runner starting
    assert s.handle(RunnerConnected(start.runner_id, DEFAULT, 2.0)) == [
        Assign("j1", start.runner_id)
    ]


def test_a_cancelled_queued_job_leaves_the_queue():
    s = Scheduler(SchedulerConfig(RunnerPolicy(max_runners=1)))
    s.handle(JobQueued("j1", DEFAULT, 0.0))
    s.handle(JobQueued("j2", DEFAULT, 0.0))
    s.handle(JobDequeued("j2", 0.5))
    assert s.queued == ["j1"]
    assert s.position("j2") == -1


def test_sessions_get_their_own_runner_and_keep_it():
    s = Scheduler()
    train = Pool(session="train")
    out = s.handle(JobQueued("j1", train, 0.0))
    (start,) = kinds(out, StartRunner)
    assert start.pool == train
    assert s.handle(RunnerConnected(start.runner_id, train, 0.5)) == [Assign("j1", start.runner_id)]
    # a job of no session does not take the session's runner, even when it is idle
    s.handle(TaskDone(start.runner_id, 1.0))
    out = s.handle(JobQueued("j2", DEFAULT, 1.0))
    assert kinds(out, Assign) == []
    assert kinds(out, StartRunner)[0].pool == DEFAULT
    # the session's next cell goes to its runner
    assert s.handle(JobQueued("j3", train, 2.0)) == [Assign("j3", start.runner_id)]


def test_a_second_cell_of_a_busy_session_waits_for_it_instead_of_starting_another_runner():
    s = Scheduler()
    train = Pool(session="train")
    out = s.handle(JobQueued("j1", train, 0.0))
    connect_started(s, out)
    out = s.handle(JobQueued("j2", train, 1.0))
    assert kinds(out, StartRunner) == []
    assert "session 'train'" in kinds(out, Waiting)[0].message


def test_idle_runners_scale_down_after_the_window_but_min_containers_stay():
    s = Scheduler(SchedulerConfig(RunnerPolicy(scaledown_window=60, min_containers=1)))
    out = s.handle(JobQueued("j1", DEFAULT, 0.0)) + s.handle(JobQueued("j2", DEFAULT, 0.0))
    starts = kinds(out, StartRunner)
    assert len(starts) == 2
    connect_started(s, out)
    for start in starts:
        s.handle(TaskDone(start.runner_id, 10.0))
    assert kinds(s.handle(Tick(69.0)), StopRunner) == []
    stops = kinds(s.handle(Tick(71.0)), StopRunner)
    assert len(stops) == 1 and "idle for 61 s" in stops[0].reason
    assert kinds(s.handle(Tick(500.0)), StopRunner) == []  # one stays: min_containers=1


def test_min_containers_starts_runners_on_a_tick():
    s = Scheduler(SchedulerConfig(RunnerPolicy(min_containers=2)))
    out = s.handle(Tick(0.0))
    assert len(kinds(out, StartRunner)) == 2
    assert kinds(s.handle(Tick(1.0)), StartRunner) == []  # already starting


def test_prewarm_starts_runners_that_then_take_jobs():
    s = Scheduler()
    out = s.handle(Prewarm(1, 0.0))
    (start,) = kinds(out, StartRunner)
    s.handle(RunnerConnected(start.runner_id, DEFAULT, 0.3))
    assert s.handle(JobQueued("j1", DEFAULT, 1.0)) == [Assign("j1", start.runner_id)]


def test_at_max_runners_an_idle_runner_of_another_pool_makes_room():
    s = Scheduler(SchedulerConfig(RunnerPolicy(max_runners=1)))
    out = s.handle(JobQueued("j1", DEFAULT, 0.0))
    connect_started(s, out)
    old = kinds(out, StartRunner)[0].runner_id
    s.handle(TaskDone(old, 1.0))
    out = s.handle(JobQueued("j2", Pool(session="s"), 2.0))
    assert kinds(out, StopRunner)[0].runner_id == old
    assert kinds(out, StartRunner)[0].pool == Pool(session="s")


def test_a_runner_that_reconnects_busy_is_not_given_another_job():
    s = Scheduler()
    s.handle(RunnerConnected("r-old", DEFAULT, 0.0, busy_with="j0"))
    out = s.handle(JobQueued("j1", DEFAULT, 0.5))
    assert kinds(out, Assign) == []
    assert s.handle(TaskDone("r-old", 1.0)) == [Assign("j1", "r-old")]


def test_runner_ids_carry_the_prefix():
    s = Scheduler(SchedulerConfig(id_prefix="ab12-"))
    (start,) = kinds(s.handle(JobQueued("j1", DEFAULT, 0.0)), StartRunner)
    assert start.runner_id == "r-ab12-1"


def test_jobs_asking_for_other_resources_do_not_share_a_runner():
    s = Scheduler()
    out = s.handle(JobQueued("j1", DEFAULT, 0.0))
    connect_started(s, out)
    runner = kinds(out, StartRunner)[0].runner_id
    s.handle(TaskDone(runner, 1.0))
    big = Pool(cpu=4, memory_mb=8192)
    out = s.handle(JobQueued("j2", big, 2.0))
    assert kinds(out, Assign) == []
    assert kinds(out, StartRunner)[0].pool == big
