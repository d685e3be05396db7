"""Runners are pooled by their volumes: mounts are fixed when a runner starts."""

from __future__ import annotations

from remotecell.backend.scheduler.queue import (
    Assign,
    JobQueued,
    Pool,
    RunnerConnected,
    Scheduler,
    StartRunner,
    TaskDone,
)
from remotecell.contract.volumes import Mount

MODELS = Pool(volumes=(Mount("/models", "weights", "id-1"),))
MODELS_AGAIN = Pool(volumes=(Mount("/models", "weights", "id-2"),))  # made again after a delete
ELSEWHERE = Pool(volumes=(Mount("/data", "weights", "id-1"),))


def started(out):
    return [i for i in out if isinstance(i, StartRunner)]


def test_a_runner_serves_only_jobs_that_mount_what_it_mounts():
    s = Scheduler()
    (start,) = started(s.handle(JobQueued("j1", MODELS, 0.0)))
    assert start.pool == MODELS  # the executor mounts what the pool names
    assert s.handle(RunnerConnected(start.runner_id, MODELS, 0.1)) == [
        Assign("j1", start.runner_id)
    ]
    s.handle(TaskDone(start.runner_id, 1.0))
    for job, pool in [("plain", Pool()), ("moved", ELSEWHERE), ("recreated", MODELS_AGAIN)]:
        out = s.handle(JobQueued(job, pool, 2.0))
        assert not [i for i in out if isinstance(i, Assign)], job
        assert [i.pool for i in started(out)] == [pool]
    assert s.handle(JobQueued("same", MODELS, 3.0)) == [Assign("same", start.runner_id)]
