"""A job's life from submission to its end, and its runner's: pure decisions.

The lifecycle sees events (a job submitted or ready to queue, a cancel, a runner's
hello, its lost connection, its exit, a task's end, a clock tick) and returns
instructions (send a task, interrupt a cell, ask a runner to stop, kill it, say that a
job is retried or ended). It does no I/O and reads no clock: every deadline (a cell's
timeout, the cancel grace, a lost runner's reconnect grace, a retry's backoff, a
stopped runner's grace) is a time stored here and acted on by the first ``Tick`` at or
after it; ``next_deadline()`` tells the shell when to tick. Tests feed events with a
fake clock and never sleep.

Which job runs on which runner, and which runners to start and stop, is the queue's
decision (``scheduler/queue.py``); the lifecycle owns a ``Scheduler``, feeds it the
events it needs, and turns its instructions into its own.

The rules it keeps:

* A job ends exactly once (``JobEnded``), and nothing is sent about it afterwards.
* A task goes only to a connected runner that holds no other job. A runner whose
  connection dropped takes no new job until it is back (or given up on).
* A failed attempt is retried while ``retries`` allows and nobody cancelled the job,
  after a backoff that doubles per attempt; every attempt is counted.
* A cell that ignores its interrupt for ``cancel_grace`` has its runner killed; a runner
  that does not reconnect within ``reconnect_grace`` is killed; a runner asked to stop
  is killed if it still runs ``stop_grace`` later.
"""

from __future__ import annotations

from remotecell._proto import pb
from remotecell.backend.scheduler import queue as q
from remotecell.backend.scheduler._lifecycle_state import JobRecord, RunnerRecord
from remotecell.backend.scheduler.lifecycle_events import (
    RETRYABLE,
    CancelRequested,
    Closing,
    Event,
    Failure,
    Instruction,
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
    TaskUndelivered,
)
from remotecell.backend.scheduler.queue import (
    Pool,
    Prewarm,
    Scheduler,
    StartRunner,
    StopRunner,
    Tick,
    Waiting,
)


class Lifecycle:
    """Jobs and runners over time. ``handle(event) -> instructions`` is the one entry point."""

    def __init__(self, config: LifecycleConfig | None = None) -> None:
        self.config = config or LifecycleConfig()
        self.queue = Scheduler(self.config.queue)
        self._jobs: dict[str, JobRecord] = {}
        self._runners: dict[str, RunnerRecord] = {}
        self._closing = False
        self._out: list[Instruction] = []

    # -- queries ------------------------------------------------------------------

    def job_state(self, job_id: str) -> int | None:
        """The state of an active job (None: not active here)."""
        job = self._jobs.get(job_id)
        return job.state if job is not None else None

    def runner_ever_connected(self, runner_id: str) -> bool:
        runner = self._runners.get(runner_id)
        return runner is not None and runner.ever_connected

    def runner_job(self, runner_id: str) -> str:
        runner = self._runners.get(runner_id)
        return runner.job if runner is not None else ""

    def runner_pool(self, runner_id: str) -> Pool | None:
        runner = self._runners.get(runner_id)
        return runner.pool if runner is not None else None

    def runner_pools(self) -> list[Pool]:
        return [r.pool for r in self._runners.values()]

    @property
    def runner_ids(self) -> list[str]:
        return list(self._runners)

    def next_deadline(self) -> float | None:
        """The earliest time a ``Tick`` has something to do (None: nothing pending)."""
        times = [t for j in self._jobs.values() for t in j.deadlines()]
        times += [t for r in self._runners.values() for t in r.deadlines()]
        return min(times, default=None)

    # -- the one entry point -------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        self._out = []
        now = event.now
        if isinstance(event, JobSubmitted):
            self._jobs[event.job_id] = JobRecord(
                event.job_id, event.pool, event.gpu, event.retries, event.timeout_s
            )
        elif isinstance(event, JobReady):
            job = self._jobs.get(event.job_id)
            if job is not None and job.state == pb.QUEUED and not job.queued:
                self._enqueue(job, now)
        elif isinstance(event, JobRestored):
            self._restore(event)
        elif isinstance(event, JobFailed):
            self._job_failed(event)
        elif isinstance(event, CancelRequested):
            self._cancel(event)
        elif isinstance(event, TaskFinished):
            self._task_finished(event)
        elif isinstance(event, TaskUndelivered):
            self._task_undelivered(event)
        elif isinstance(event, RunnerUp):
            self._runner_up(event)
        elif isinstance(event, RunnerDown):
            self._runner_down(event.runner_id, now)
        elif isinstance(event, RunnerExited):
            self._runner_exited(event)
        elif isinstance(event, RunnerStartFailed):
            runner = self._runners.pop(event.runner_id, None)
            if runner is not None:
                self._start_failed(runner, event.message, now)
        elif isinstance(event, Closing):
            self._closing = True
        elif isinstance(event, Tick):
            self._deadlines(now)
            self._queue(event)
        elif isinstance(event, Prewarm):
            self._queue(event)
        out, self._out = self._out, []
        return out

    # -- jobs -------------------------------------------------------------------------

    def _enqueue(self, job: JobRecord, now: float, front: bool = False) -> None:
        job.queued = True
        self._queue(q.JobQueued(job.id, job.pool, now, front=front, gpu=job.gpu))

    def _restore(self, event: JobRestored) -> None:
        job = JobRecord(event.job_id, event.pool, event.gpu, event.retries, event.timeout_s)
        job.state, job.attempt, job.runner_id = pb.RUNNING, event.attempt, event.runner_id
        job.orphan_at = event.now + self.config.reconnect_grace
        if job.timeout_s > 0:
            job.timeout_at = event.started + job.timeout_s
        self._jobs[job.id] = job
        if job.runner_id and job.runner_id not in self._runners:
            # Its runner still counts, and its GPUs stay taken, until it is back or given up.
            runner = RunnerRecord(
                job.runner_id, job.pool, launched=False, expected=True, job=job.id
            )
            self._runners[runner.id] = runner
            self._queue(
                q.RunnerConnected(runner.id, job.pool, event.now, busy_with=job.id, gpus=event.gpus)
            )

    def _job_failed(self, event: JobFailed) -> None:
        job = self._jobs.get(event.job_id)
        if job is None:
            return
        if job.state == pb.RUNNING:
            self._free_runner_of(job, event.now)
        elif job.queued:
            self._queue(q.JobDequeued(job.id, event.now))
        self._end(job, pb.FAILED, event.message or event.failure.message, event.failure)

    def _cancel(self, event: CancelRequested) -> None:
        job = self._jobs.get(event.job_id)
        if job is None:
            return
        if job.state == pb.QUEUED:
            if job.queued:
                self._queue(q.JobDequeued(job.id, event.now))
            self._end(job, pb.CANCELLED, f"cancelled before it started: {event.reason}")
            return
        job.cancel_reason = event.reason
        runner = self._runners.get(job.runner_id)
        if runner is None or not runner.connected:
            self._forget_expected(runner, event.now)
            self._end(job, pb.CANCELLED, f"cancelled: {event.reason}")
            return
        self._interrupt(job, runner, event.reason, event.now)

    def _interrupt(
        self, job: JobRecord, runner: RunnerRecord, reason: str, now: float, timeout: bool = False
    ) -> None:
        self._out.append(Interrupt(job.id, runner.id, reason, timeout))
        job.kill_at = now + self.config.cancel_grace

    def _retry_or_fail(
        self, job: JobRecord, message: str, failure: Failure | None, now: float
    ) -> None:
        """After a failed attempt: queue it again when ``retries`` allows, else fail the job."""
        if job.attempt <= job.retries and not job.cancel_reason:
            job.state, job.runner_id, job.timed_out = pb.QUEUED, "", False
            job.clear_deadlines()
            delay = self.config.backoff(job.attempt)
            self._out.append(Retrying(job.id, job.attempt, message, delay))
            if delay > 0:
                job.retry_at = now + delay
            else:
                self._enqueue(job, now, front=True)
        else:
            self._end(job, pb.FAILED, message, failure)

    def _end(
        self,
        job: JobRecord,
        state: int,
        message: str,
        failure: Failure | None = None,
        by_runner: bool = False,
    ) -> None:
        job.state = state
        job.clear_deadlines()
        self._jobs.pop(job.id, None)
        self._out.append(JobEnded(job.id, state, message, failure, by_runner))

    def _task_finished(self, event: TaskFinished) -> None:
        runner = self._runners.get(event.runner_id)
        job = self._jobs.get(event.job_id)
        if job is None or job.state != pb.RUNNING or job.runner_id != event.runner_id:
            # The job ended here already (cancelled, or given up on): the runner's late
            # end only frees the runner.
            if runner is not None and runner.job == event.job_id:
                self._runner_free(runner, event.now)
            return
        if (
            event.state == pb.FAILED
            and event.error_kind in RETRYABLE
            and job.attempt <= job.retries
            and not job.cancel_reason
        ):
            self._retry_or_fail(job, event.message, None, event.now)
        else:
            self._end(job, event.state, event.message, by_runner=True)
        if runner is not None:
            self._runner_free(runner, event.now)

    def _task_undelivered(self, event: TaskUndelivered) -> None:
        job = self._jobs.get(event.job_id)
        if job is not None and job.state == pb.RUNNING and job.runner_id == event.runner_id:
            job.state, job.runner_id, job.attempt = pb.QUEUED, "", job.attempt - 1
            job.clear_deadlines()
            runner = self._runners.get(event.runner_id)
            if runner is not None:
                runner.job = ""
            self._enqueue(job, event.now, front=True)
        self._runner_down(event.runner_id, event.now)

    def _free_runner_of(self, job: JobRecord, now: float) -> None:
        runner = self._runners.get(job.runner_id)
        if runner is not None and runner.job == job.id:
            self._runner_free(runner, now)

    # -- runners ------------------------------------------------------------------------

    def _runner_free(self, runner: RunnerRecord, now: float) -> None:
        runner.job = ""
        if runner.stale_job:
            runner.stale_job, runner.kill_at = "", None
        self._queue(q.TaskDone(runner.id, now))

    def _runner_up(self, event: RunnerUp) -> None:
        runner = self._runners.get(event.runner_id)
        if runner is None:
            # One this control plane did not start: it reconnects after a restart.
            runner = RunnerRecord(event.runner_id, event.pool, launched=False)
            self._runners[runner.id] = runner
        runner.expected = False
        runner.lost_at = None
        runner.pool = event.pool
        runner.connected = runner.ever_connected = True
        if runner.stopping:
            self._out.append(StopRunner(runner.id, "it was asked to stop"))
            return
        busy_with = ""
        runner.job = ""
        if event.current_job and event.busy:
            runner.job = event.current_job
            busy_with = event.current_job
            job = self._jobs.get(event.current_job)
            if job is not None and job.state == pb.RUNNING:
                job.runner_id = runner.id
                job.orphan_at = None
                if job.timed_out:
                    self._interrupt(job, runner, self._timeout_reason(job), event.now, True)
                elif job.cancel_reason:
                    self._interrupt(job, runner, job.cancel_reason, event.now)
            else:
                # It came back still running a job that ended here meanwhile: interrupt
                # that cell, and kill the runner if it ignores that.
                self._out.append(Interrupt(event.current_job, runner.id, "the job already ended"))
                runner.stale_job = event.current_job
                runner.kill_at = event.now + self.config.cancel_grace
                runner.kill_reason = "it kept running a cell that had already ended"
        self._queue(
            q.RunnerConnected(
                runner.id, runner.pool, event.now, busy_with=busy_with, gpus=event.gpus
            )
        )

    def _runner_down(self, runner_id: str, now: float) -> None:
        runner = self._runners.get(runner_id)
        if runner is None or not runner.connected:
            return
        runner.connected = False
        if self._closing:
            return
        runner.lost_at = now + self.config.reconnect_grace
        self._queue(q.RunnerAway(runner.id, now))

    def _runner_exited(self, event: RunnerExited) -> None:
        runner = self._runners.pop(event.runner_id, None)
        if runner is None:
            return
        if runner.launched and not runner.ever_connected and not self._closing:
            tail = f"; its log ends with:\n{event.log_tail}" if event.log_tail else ""
            message = f"the runner ended before it connected ({event.how}){tail}"
            self._start_failed(runner, message, event.now)
            return
        self._queue(q.RunnerGone(runner.id, event.now))
        for job in [j for j in self._jobs.values() if j.state == pb.RUNNING]:
            if job.runner_id == runner.id:
                self._lost_runner(job, event.how, event.now)

    def _lost_runner(self, job: JobRecord, how: str, now: float) -> None:
        if job.cancel_reason and not job.timed_out:
            self._end(job, pb.CANCELLED, job.cancel_reason)
            return
        if job.timed_out:
            message = f"{self._timeout_reason(job)}; its runner was killed"
            failure = Failure(pb.Error.TIMEOUT, "TimeoutError", message)
        elif self._closing:
            message = "the control plane was stopped while this cell ran, and its runner with it"
            failure = Failure(pb.Error.RUNNER_DIED, "RunnerStopped", message)
        else:
            message = f"the runner running this cell died: {how}"
            failure = Failure(pb.Error.RUNNER_DIED, "RunnerDied", message)
        self._retry_or_fail(job, message, failure, now)

    def _start_failed(self, runner: RunnerRecord, message: str, now: float) -> None:
        """A runner could not start: the jobs waiting for its pool fail, saying why."""
        waiting = self.queue.queued_in(runner.pool)
        for job_id in waiting:
            self._queue(q.JobDequeued(job_id, now))
        self._queue(q.RunnerGone(runner.id, now))
        for job_id in waiting:
            job = self._jobs.get(job_id)
            if job is not None:
                self._end(
                    job, pb.FAILED, message, Failure(pb.Error.SETUP, "RunnerStartError", message)
                )

    def _forget_expected(self, runner: RunnerRecord | None, now: float) -> None:
        """Stops holding a place for a runner that has not come back since the restart
        (should it still come back, it is told to stop its stale cell)."""
        if runner is not None and runner.expected:
            self._runners.pop(runner.id, None)
            self._queue(q.RunnerGone(runner.id, now))

    # -- deadlines ------------------------------------------------------------------------

    def _deadlines(self, now: float) -> None:
        for job in list(self._jobs.values()):
            if job.id not in self._jobs:
                continue  # ended by an earlier deadline in this tick
            if job.retry_at is not None and job.retry_at <= now:
                job.retry_at = None
                self._enqueue(job, now, front=True)
            if job.state != pb.RUNNING:
                continue
            runner = self._runners.get(job.runner_id)
            if job.timeout_at is not None and job.timeout_at <= now:
                job.timeout_at = None
                job.timed_out = True
                if runner is not None and runner.connected:
                    self._interrupt(job, runner, self._timeout_reason(job), now, timeout=True)
            if job.kill_at is not None and job.kill_at <= now:
                job.kill_at = None
                if not job.timed_out:  # a timeout says so itself when the runner is gone
                    job.cancel_reason = (job.cancel_reason or "cancelled") + (
                        f"; the cell did not stop within {self.config.cancel_grace:g} s of the "
                        "interrupt, so its runner was killed"
                    )
                self._out.append(
                    KillRunner(
                        job.runner_id,
                        f"job {job.id} ignored its interrupt for {self.config.cancel_grace:g} s",
                    )
                )
            if job.orphan_at is not None and job.orphan_at <= now:
                job.orphan_at = None
                if runner is None or not runner.connected:
                    self._forget_expected(runner, now)
                    message = (
                        f"the runner running this cell did not reconnect within "
                        f"{self.config.reconnect_grace:g} s after the control plane restarted"
                    )
                    self._retry_or_fail(
                        job, message, Failure(pb.Error.RUNNER_DIED, "RunnerLost", message), now
                    )
        for runner in list(self._runners.values()):
            if runner.lost_at is not None and runner.lost_at <= now:
                runner.lost_at = None
                if not runner.connected:
                    self._out.append(KillRunner(runner.id, "it did not reconnect"))
            if runner.kill_at is not None and runner.kill_at <= now:
                runner.kill_at = None
                if not runner.stale_job or runner.job == runner.stale_job:
                    self._out.append(KillRunner(runner.id, runner.kill_reason))

    @staticmethod
    def _timeout_reason(job: JobRecord) -> str:
        return f"the cell ran longer than its timeout of {job.timeout_s:g} s"

    # -- the queue --------------------------------------------------------------------------

    def _queue(self, event: q.Event) -> None:
        """Feeds the queue and carries its decisions into the lifecycle's."""
        now = event.now
        for ins in self.queue.handle(event):
            if isinstance(ins, q.Assign):
                self._assign(ins.job_id, ins.runner_id, now)
            elif isinstance(ins, StartRunner):
                if self._closing:  # it would outlive the executor
                    continue
                self._runners[ins.runner_id] = RunnerRecord(ins.runner_id, ins.pool)
                self._out.append(ins)
            elif isinstance(ins, StopRunner):
                runner = self._runners.get(ins.runner_id)
                if runner is not None:
                    runner.stopping = True
                    runner.kill_at = now + self.config.stop_grace
                    runner.kill_reason = f"it did not stop within {self.config.stop_grace:g} s"
                self._out.append(ins)
            elif isinstance(ins, q.Unplaceable):
                job = self._jobs.get(ins.job_id)
                if job is not None:
                    failure = Failure(pb.Error.SETUP, "SchedulingError", ins.message)
                    self._end(job, pb.FAILED, ins.message, failure)
            elif isinstance(ins, Waiting) and ins.job_id in self._jobs:
                self._out.append(ins)

    def _assign(self, job_id: str, runner_id: str, now: float) -> None:
        job = self._jobs.get(job_id)
        runner = self._runners.get(runner_id)
        if job is None or job.state != pb.QUEUED or runner is None or not runner.connected:
            # Cannot happen while the queue and the lifecycle agree; if it does, the
            # runner is free again (if it is here) and the job back at the queue's front.
            if runner is not None:
                if not runner.connected:
                    self._queue(q.RunnerAway(runner_id, now))
                self._queue(q.TaskDone(runner_id, now))
            if job is not None and job.state == pb.QUEUED:
                self._enqueue(job, now, front=True)
            return
        job.attempt += 1
        job.state, job.runner_id, job.queued = pb.RUNNING, runner_id, False
        runner.job = job_id
        if job.timeout_s > 0:
            job.timeout_at = now + job.timeout_s
        self._out.append(SendTask(job_id, runner_id, job.attempt))
