"""GPU placement: exclusive GPUs, fallbacks in order, arrival order, jobs that can never fit.

The machine's GPUs are passed in as the scheduler's inventory; no NVML is involved."""

from __future__ import annotations

from remotecell.backend.scheduler.policy import RunnerPolicy
from remotecell.backend.scheduler.queue import (
    Assign,
    JobQueued,
    MachineGPU,
    Pool,
    RunnerConnected,
    Scheduler,
    SchedulerConfig,
    StartRunner,
    StopRunner,
    TaskDone,
    Unplaceable,
    Waiting,
)
from remotecell.contract.resources import GPUChoice, parse_gpu

H100S = tuple(MachineGPU(f"GPU-h{i}", "H100", "NVIDIA H100 80GB HBM3") for i in range(2))
T4 = MachineGPU("GPU-t0", "T4", "Tesla T4")


def scheduler(*gpus: MachineGPU, max_runners: int = 8) -> Scheduler:
    return Scheduler(SchedulerConfig(RunnerPolicy(max_runners=max_runners), gpus=gpus))


def kinds(instructions, kind):
    return [i for i in instructions if isinstance(i, kind)]


def queue(s: Scheduler, job_id: str, gpu, now: float = 0.0):
    return s.handle(JobQueued(job_id, Pool(), now, gpu=parse_gpu(gpu)))


def connect(s: Scheduler, start: StartRunner, now: float = 1.0):
    return s.handle(RunnerConnected(start.runner_id, start.pool, now, gpus=start.gpus))


def test_a_gpu_job_starts_a_runner_holding_that_gpu_and_runs_there():
    s = scheduler(*H100S)
    (start,) = kinds(queue(s, "j1", "H100"), StartRunner)
    assert start.pool == Pool(gpu=GPUChoice("H100"))
    assert start.gpus == ("GPU-h0",)
    assert connect(s, start) == [Assign("j1", start.runner_id)]


def test_a_job_asking_for_two_needs_a_runner_holding_two():
    s = scheduler(*H100S)
    (one,) = kinds(queue(s, "j1", "H100"), StartRunner)
    connect(s, one)
    s.handle(TaskDone(one.runner_id, 2.0))
    out = queue(s, "j2", "H100:2", 3.0)
    # The idle one-GPU runner cannot serve it; it gives its GPU back for a two-GPU runner.
    assert StopRunner(one.runner_id, "giving its GPUs to a job that needs H100:2") in out
    (two,) = kinds(out, StartRunner)
    assert two.pool.gpu == GPUChoice("H100", 2)
    assert sorted(two.gpus) == ["GPU-h0", "GPU-h1"]


def test_gpus_are_exclusive_and_a_waiting_job_says_what_it_waits_for():
    s = scheduler(*H100S)
    starts = kinds(queue(s, "j1", "H100") + queue(s, "j2", "H100"), StartRunner)
    assert {g for st in starts for g in st.gpus} == {"GPU-h0", "GPU-h1"}
    for st in starts:
        connect(s, st)
    out = queue(s, "j3", "H100")
    assert kinds(out, StartRunner) == []
    assert kinds(out, Waiting) == [Waiting("j3", "waiting for H100 — 0 jobs ahead")]
    out = queue(s, "j4", "H100")
    assert kinds(out, Waiting) == [Waiting("j4", "waiting for H100 — 1 jobs ahead")]
    # The first runner to come free takes the job that arrived first.
    out = s.handle(TaskDone(starts[1].runner_id, 5.0))
    assert kinds(out, Assign) == [Assign("j3", starts[1].runner_id)]


def test_fallbacks_are_tried_in_order():
    s = scheduler(H100S[0], T4)
    (start,) = kinds(queue(s, "j1", ["A100-80GB", "T4", "H100"]), StartRunner)
    assert (start.pool.gpu, start.gpus) == (GPUChoice("T4"), ("GPU-t0",))
    (start,) = kinds(queue(s, "j2", ["T4", "H100"]), StartRunner)
    assert (start.pool.gpu, start.gpus) == (GPUChoice("H100"), ("GPU-h0",))


def test_any_takes_whatever_type_is_free():
    s = scheduler(T4)
    (start,) = kinds(queue(s, "j1", "any"), StartRunner)
    assert start.pool.gpu == GPUChoice("T4")


def test_a_later_job_does_not_take_gpus_an_earlier_job_waits_for():
    s = scheduler(*H100S)
    (first,) = kinds(queue(s, "j1", "H100"), StartRunner)
    connect(s, first)
    out = queue(s, "j2", "H100:2")  # needs both: waits for j1's
    assert kinds(out, StartRunner) == []
    out = queue(s, "j3", "H100")  # one H100 is free, but j2 came first
    assert kinds(out, StartRunner) == []
    assert kinds(out, Waiting) == [Waiting("j3", "waiting for H100 — 1 jobs ahead")]


def test_a_job_that_can_never_fit_fails_at_once_saying_what_the_machine_has():
    s = scheduler(*H100S)
    assert queue(s, "j1", "T4") == [
        Unplaceable(
            "j1",
            'gpu="T4" can never run here: this machine has 2 H100; ask for what it has, '
            "or run on a machine with the GPUs you need",
        )
    ]
    assert kinds(queue(s, "j2", "H100:3"), Unplaceable)
    assert s.queued == []


def test_never_fits_is_a_query_the_control_plane_asks_before_it_records_a_job():
    s = scheduler(*H100S)
    assert s.never_fits(parse_gpu("T4")) == (
        'gpu="T4" can never run here: this machine has 2 H100; ask for what it has, '
        "or run on a machine with the GPUs you need"
    )
    assert "this machine has 2 H100" in s.never_fits(parse_gpu("H100:3"))
    assert s.never_fits(parse_gpu("H100:2")) == ""
    assert s.never_fits(None) == ""
    assert s.queued == [] and s.gpu_holders() == {}  # asking changed nothing


def test_no_gpus_means_gpu_jobs_fail_and_cpu_jobs_still_run():
    s = scheduler()
    (bad,) = queue(s, "j1", "any")
    assert isinstance(bad, Unplaceable)
    assert "this machine has no GPUs" in bad.message
    (start,) = kinds(queue(s, "j2", None), StartRunner)
    assert (start.pool, start.gpus) == (Pool(), ())


def test_cpu_jobs_never_run_on_gpu_runners():
    s = scheduler(T4)
    (gpu_runner,) = kinds(queue(s, "j1", "T4"), StartRunner)
    connect(s, gpu_runner)
    s.handle(TaskDone(gpu_runner.runner_id, 2.0))
    out = queue(s, "j2", None, 3.0)
    assert kinds(out, Assign) == []
    (cpu_runner,) = kinds(out, StartRunner)
    assert cpu_runner.gpus == ()
