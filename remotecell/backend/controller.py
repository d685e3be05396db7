"""The control plane's async shell: carries out the scheduler's decisions.

It owns the jobs that are still active, the runners' connections and the executor,
stores every event before anyone sees it, and fans events out to the clients that
follow a job.

Sequence numbers: the controller numbers a job's events until it hands the job to a
runner; from then until the runner's ``finished`` event (or its death) the runner
numbers them, starting at ``Task.first_seq``. So no two writers ever share a job's
numbers, and a runner can resend its events after a reconnect with no duplicates
(the store ignores a sequence number it already has).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from remotecell._proto import pb
from remotecell.backend.executors.base import Executor, RunnerExit, RunnerHandle, RunnerLaunch
from remotecell.backend.images.builder import BuiltImage, is_progress
from remotecell.backend.scheduler.queue import (
    Assign,
    Event,
    Instruction,
    JobDequeued,
    JobQueued,
    MachineGPU,
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
    Unplaceable,
    Waiting,
)
from remotecell.backend.secrets import refs as secret_refs
from remotecell.backend.secrets.store import SecretStore
from remotecell.backend.state.blobs import spec_refs, value_refs
from remotecell.backend.state.store import Store
from remotecell.backend.telemetry.downsample import DEFAULT_INTERVAL, Downsampler
from remotecell.backend.volumes.mounts import LaunchVolume
from remotecell.backend.volumes.store import VolumeMissing, VolumeStore
from remotecell.contract.errors import ConfigError, ImageBuildError
from remotecell.contract.resources import GPURequest, cost_usd
from remotecell.contract.volumes import check_mounts

if TYPE_CHECKING:
    from remotecell.backend.images.cache import ImageCache

log = logging.getLogger("remotecell.controller")

TERMINAL = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)
#: Stored events replayed per message.
REPLAY_BATCH = 256
RETRYABLE = (pb.Error.USER_CODE, pb.Error.RUNNER_DIED, pb.Error.TIMEOUT)


class JobNotFound(LookupError):
    pass


@dataclass
class ControllerConfig:
    control_url: str  # the address runners connect to
    token: str
    scaledown_window: float = 60.0
    session_idle_timeout: float = 1800.0
    min_containers: int = 0
    max_runners: int = 8
    cancel_grace: float = 5.0
    #: How long a job whose runner lost its connection (or that was running when the
    #: control plane restarted) waits for that runner to come back.
    reconnect_grace: float = 15.0
    tick: float = 1.0
    prewarm: int = 0  # runners started with the control plane, before any job
    #: Per GPU-second prices by canonical type, over the defaults (Modal's list prices).
    gpu_prices: dict[str, float] = field(default_factory=dict)
    #: Seconds of telemetry readings that one stored sample aggregates.
    metrics_interval: float = DEFAULT_INTERVAL


def pool_of(spec: pb.JobSpec) -> Pool:
    return Pool(
        spec.image,
        spec.session,
        spec.resources.cpu,
        spec.resources.memory_mb,
        volumes=volumes_key(spec.volumes),
    )


def volumes_key(mounts: Iterable[pb.VolumeMount]) -> tuple[tuple[str, str, str], ...]:
    """Mounts as a pool names them: (path, name, volume id), by path."""
    return tuple(sorted((m.path, m.name, m.volume_id) for m in mounts))


def gpu_of(resources: pb.Resources) -> GPURequest | None:
    """The GPUs a job asks for, validated as strictly as the magic's ``gpu=``.

    Raises:
        ConfigError: an unknown type or a bad count; the message says what is valid.
    """
    if not resources.gpu:
        return None
    return GPURequest.from_fields([{"type": c.type, "count": c.count} for c in resources.gpu])


def held_gpu(resources: pb.Resources) -> str:
    """What a runner's announced resources say it holds, as a pool names it (``"H100:2"``)."""
    return ", ".join(f"{c.type}:{c.count}" if c.count > 1 else c.type for c in resources.gpu)


def gpu_held_by(pool: Pool) -> tuple[str, int]:
    """The type and number of GPUs a runner of ``pool`` holds (``("", 0)``: none)."""
    if not pool.gpu:
        return "", 0
    gpu_type, _, count = pool.gpu.partition(":")
    return gpu_type, int(count or 1)


@dataclass
class _Job:
    id: str
    spec: pb.JobSpec
    state: int
    next_seq: int
    attempt: int = 0
    runner_id: str = ""
    cancel_reason: str = ""
    timed_out: bool = False
    last_error_kind: int = -1
    subscribers: set[asyncio.Queue[pb.JobEvent]] = field(default_factory=set)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    #: The values of its ad-hoc secrets, by index in ``spec.secrets``: in memory only.
    adhoc_secrets: dict[int, dict[str, str]] = field(default_factory=dict, repr=False)
    #: The current attempt's start, GPUs and price per second (None: unpriced).
    started: float = 0.0
    gpu_type: str = ""
    gpu_count: int = 0
    price: float | None = 0.0
    #: Telemetry: the newest reading (for /metrics) and the samples waiting to be stored.
    last_metrics: pb.JobEvent | None = None
    samples: Downsampler = field(default_factory=Downsampler)

    @property
    def pool(self) -> Pool:
        return pool_of(self.spec)

    def queued(self, front: bool = False) -> JobQueued:
        return JobQueued(
            self.id, self.pool, time.time(), front=front, gpu=gpu_of(self.spec.resources)
        )

    def clear_timers(self) -> None:
        for t in self.timers:
            t.cancel()
        self.timers.clear()


@dataclass
class _Runner:
    id: str
    pool: Pool
    handle: RunnerHandle | None = None
    outbox: asyncio.Queue[pb.RunnerInstruction | None] | None = None
    job: str = ""
    pid: int = 0
    connected: bool = False
    ever_connected: bool = False
    exited: bool = False
    lost_timer: asyncio.TimerHandle | None = None
    #: Busy with a job when the control plane restarted; not yet reconnected.
    expected: bool = False


class Controller:
    def __init__(
        self,
        config: ControllerConfig,
        store: Store,
        executor: Executor,
        images: ImageCache | None = None,
        builder: str = "venv",
        fetch_blob: Callable[[str], bytes] | None = None,
        default_image: pb.ImageSpec | None = None,
        gpus: tuple[MachineGPU, ...] = (),
        gpu_note: str = "",
        touch_blobs: Callable[[Iterable[str]], None] | None = None,
        secret_store: SecretStore | None = None,
        volume_store: VolumeStore | None = None,
    ) -> None:
        self.config = config
        self.store = store
        #: Volumes and their files; None: this control plane mounts no volumes.
        self.volume_store = volume_store
        self.executor = executor
        #: Builds jobs' images with ``builder`` (the one that suits ``executor``).
        self.images = images
        self.builder = builder
        self.fetch_blob = fetch_blob
        #: The image of jobs that name none (an executor that needs one: docker).
        self.default_image = default_image
        #: Why this machine offers no GPUs, when it offers none ("no NVIDIA driver ...").
        self.gpu_note = gpu_note
        #: Marks blobs as used now (results' blobs, so they outlive the job by --blob-ttl).
        self.touch_blobs = touch_blobs or (lambda hashes: None)
        #: Stored secrets (``remotecell secret``); None: this control plane keeps none.
        self.secret_store = secret_store
        #: Images this control plane has in hand, by id, for starting runners in them.
        self.built: dict[str, BuiltImage] = {}
        self.scheduler = Scheduler(
            SchedulerConfig(
                scaledown_window=config.scaledown_window,
                session_idle_timeout=config.session_idle_timeout,
                min_containers=config.min_containers,
                max_runners=config.max_runners,
                id_prefix=secrets.token_hex(2) + "-",
                default_image=default_image.id if default_image is not None else "",
                gpus=gpus,
            )
        )
        self.jobs: dict[str, _Job] = {}
        self.runners: dict[str, _Runner] = {}
        self.started = time.time()
        #: Where the control plane's HTTP side listens ("" when it is off), for Health.
        self.http_url = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Picks up where the last control plane left off: queued jobs are queued again;
        running jobs wait ``reconnect_grace`` for their runners to reconnect."""
        loop = asyncio.get_running_loop()
        rows = self.store.active_jobs()
        now = time.time()
        # Running jobs first: their runners still count against ``max_runners``, so the
        # queued jobs below must not start new runners in their place.
        for row in rows:
            if row.state == pb.QUEUED:
                continue
            job = _Job(
                row.id, row.spec, row.state, self.store.next_seq(row.id), row.attempt, row.runner_id
            )
            job.started, job.gpu_type, job.gpu_count, job.price = (
                row.started,
                row.gpu_type,
                row.gpu_count,
                row.price,
            )
            job.samples = Downsampler(self.config.metrics_interval)
            self.jobs[job.id] = job
            job.timers.append(
                loop.call_later(self.config.reconnect_grace, self._orphaned, job.id, job.attempt)
            )
            if job.spec.timeout_s > 0:
                left = max(0.0, job.spec.timeout_s - (now - row.started))
                job.timers.append(loop.call_later(left, self._on_timeout, job.id, job.attempt))
            if job.runner_id and job.runner_id not in self.runners:
                runner = _Runner(job.runner_id, job.pool, job=job.id, expected=True)
                self.runners[runner.id] = runner
                # Its GPUs stay taken until it is back or given up on.
                self._handle(
                    RunnerConnected(
                        runner.id, runner.pool, now, busy_with=job.id, gpus=row.gpu_uuids
                    )
                )
        for row in rows:
            if row.state == pb.QUEUED:
                job = _Job(row.id, row.spec, row.state, self.store.next_seq(row.id), row.attempt)
                self.jobs[job.id] = job
                if secret_refs.needs_adhoc(job.spec):
                    self._fail_secrets(job, secret_refs.ADHOC_LOST)
                    continue
                self._admit(job)
        self._ticker = asyncio.create_task(self._tick_forever())
        if self.config.prewarm:
            self._handle(Prewarm(self.config.prewarm, time.time()))

    async def close(self) -> None:
        self._closing = True
        if self._ticker:
            self._ticker.cancel()
        for runner in list(self.runners.values()):
            if runner.outbox is not None:
                runner.outbox.put_nowait(
                    pb.RunnerInstruction(shutdown=pb.Shutdown(reason="control plane stopping"))
                )
        deadline = time.monotonic() + 2.0
        while (
            any(r.handle is not None and not r.exited for r in self.runners.values())
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        for runner in list(self.runners.values()):
            if runner.handle is not None and not runner.exited:
                await self.executor.kill(runner.handle)
        await self.executor.close()
        for task in list(self._tasks):
            task.cancel()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick)
            self._handle(Tick(time.time()))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ clients

    def submit(self, spec: pb.JobSpec) -> str:
        """Accepts a job; returns its id.

        Raises:
            ConfigError: the spec asks for GPUs in a way that is not valid, or names a
                secret that is missing, lacks a required key or cannot be read.
        """
        gpu_of(spec.resources)
        adhoc_secrets = secret_refs.take_adhoc(spec, self.secret_store)  # not to be stored
        if not spec.image and not spec.image_spec.id and self.default_image is not None:
            spec.image_spec.CopyFrom(self.default_image)
        if spec.image_spec.id:
            spec.image = spec.image_spec.id
        self._check_volumes(spec)
        job_id = "job-" + secrets.token_hex(5)
        accepted = pb.JobEvent(
            job_id=job_id, seq=0, time=time.time(), accepted=pb.Accepted(state=pb.QUEUED)
        )
        self.store.create_job(job_id, spec, accepted)
        job = _Job(job_id, spec, pb.QUEUED, next_seq=1)
        job.adhoc_secrets = adhoc_secrets
        self.jobs[job_id] = job
        self._admit(job)
        return job_id

    # ------------------------------------------------------------------ images

    def _admit(self, job: _Job) -> None:
        """Queues a job, once its image (if it names one) is built."""
        if not job.spec.image or job.spec.image in self.built:
            self._handle(job.queued())
        else:
            self._spawn(self._prepare_image(job))

    async def _prepare_image(self, job: _Job) -> None:
        image_id = job.spec.image
        loop = asyncio.get_running_loop()

        def log_line(line: str) -> None:
            if job.id in self.jobs and job.state == pb.QUEUED:
                self._emit(
                    job, build=pb.Build(image_id=image_id, line=line, progress=is_progress(line))
                )

        def log_threadsafe(line: str) -> None:  # builders may log from a worker thread
            loop.call_soon_threadsafe(log_line, line)

        try:
            if self.images is None or self.fetch_blob is None:
                raise ImageBuildError("this control plane builds no images")
            if job.spec.image_spec.id:
                built = await self.images.get(
                    job.spec.image_spec, self.fetch_blob, log_threadsafe, builder=self.builder
                )
            else:
                found = self.images.lookup(image_id, self.builder)
                if found is None:
                    raise ConfigError(
                        f"image {image_id[:12]} is not built on this control plane; pass the "
                        "Image itself (image=img) so that it can be built"
                    )
                built = found
        except (ImageBuildError, ConfigError) as err:
            await asyncio.sleep(0)  # let the log lines queued above land first
            if job.id in self.jobs and job.state == pb.QUEUED:
                error = pb.Error(
                    kind=pb.Error.IMAGE_BUILD, type_name=type(err).__name__, message=str(err)
                )
                self._finish(job, pb.FAILED, str(err).splitlines()[0], error)
            return
        await asyncio.sleep(0)
        self.built[image_id] = built
        if job.id in self.jobs and job.state == pb.QUEUED:
            self._handle(job.queued())

    async def follow(self, job_id: str, from_seq: int = 0) -> AsyncIterator[list[pb.JobEvent]]:
        """The job's events from ``from_seq``: stored ones first, then live ones, in
        batches of the events that are ready at once (fewer messages for a fast cell)."""
        job = self.jobs.get(job_id)
        if job is None and self.store.get_job(job_id) is None:
            raise JobNotFound(job_id)
        queue: asyncio.Queue[pb.JobEvent] = asyncio.Queue()
        if job is not None:
            job.subscribers.add(queue)
        try:
            stored = list(self.store.events(job_id, from_seq))
            replay = self._with_samples(job_id, stored) if from_seq == 0 else stored
            for start in range(0, len(replay), REPLAY_BATCH):
                yield replay[start : start + REPLAY_BATCH]
            last = stored[-1].seq if stored else from_seq - 1
            if stored and stored[-1].HasField("finished"):
                return
            if job is None or job.id not in self.jobs:
                # Finished between the lookup and the replay: anything newer is stored.
                rest = list(self.store.events(job_id, last + 1))
                if rest:
                    yield rest
                return
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                fresh = [e for e in batch if e.seq > last or e.HasField("metrics")]
                if not fresh:
                    continue
                last = max([last, *(e.seq for e in fresh if not e.HasField("metrics"))])
                yield fresh
                if fresh[-1].HasField("finished"):
                    return
        finally:
            if job is not None:
                job.subscribers.discard(queue)

    def _with_samples(self, job_id: str, events: list[pb.JobEvent]) -> list[pb.JobEvent]:
        """``events`` with the job's stored telemetry samples placed among them by time."""
        samples = self.store.metrics(job_id)
        if not samples:
            return events
        out: list[pb.JobEvent] = []
        pending = iter(samples)
        sample = next(pending, None)
        for event in events:
            while sample is not None and sample[0] <= event.time:
                out.append(pb.JobEvent(job_id=job_id, time=sample[0], metrics=sample[1]))
                sample = next(pending, None)
            out.append(event)
        return out

    async def cancel(self, job_id: str, reason: str = "") -> tuple[int, bool]:
        """Cancels a job; returns (state afterwards, whether it was running)."""
        reason = reason or "cancelled by the user"
        job = self.jobs.get(job_id)
        if job is None:
            row = self.store.get_job(job_id)
            if row is None:
                raise JobNotFound(job_id)
            return row.state, False
        if job.state == pb.QUEUED:
            self._handle(JobDequeued(job_id, time.time()))
            self._finish(job, pb.CANCELLED, f"cancelled before it started: {reason}")
            return pb.CANCELLED, False
        job.cancel_reason = reason
        runner = self.runners.get(job.runner_id)
        if runner is None or not runner.connected:
            self._forget_expected(runner)
            self._finish(job, pb.CANCELLED, f"cancelled: {reason}")
            return pb.CANCELLED, True
        self._interrupt(job, runner, reason)
        # Answer with the job's end, not "running": the cell stops (or its runner is
        # killed) within the cancel grace.
        deadline = time.monotonic() + min(self.config.cancel_grace + 3.0, 20.0)
        while job_id in self.jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        row = self.store.get_job(job_id)
        return (row.state if row is not None else job.state), True

    def _interrupt(self, job: _Job, runner: _Runner, reason: str, timeout: bool = False) -> None:
        assert runner.outbox is not None
        runner.outbox.put_nowait(
            pb.RunnerInstruction(
                cancel=pb.CancelTask(job_id=job.id, reason=reason, timeout=timeout)
            )
        )
        loop = asyncio.get_running_loop()
        job.timers.append(
            loop.call_later(self.config.cancel_grace, self._kill_stuck, job.id, job.attempt)
        )

    def _kill_stuck(self, job_id: str, attempt: int) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.attempt != attempt or job.state != pb.RUNNING:
            return
        runner = self.runners.get(job.runner_id)
        log.warning(
            "job %s ignored its interrupt for %.0f s; killing runner %s",
            job_id,
            self.config.cancel_grace,
            job.runner_id,
        )
        if not job.timed_out:  # a timeout says so itself when the runner is gone
            job.cancel_reason = (job.cancel_reason or "cancelled") + (
                f"; the cell did not stop within {self.config.cancel_grace:g} s of the "
                "interrupt, so its runner was killed"
            )
        if runner is not None and runner.handle is not None:
            self._spawn(self.executor.kill(runner.handle))
        elif runner is not None:
            self._runner_exited(runner.id, RunnerExit(None))

    def _on_timeout(self, job_id: str, attempt: int) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.attempt != attempt or job.state != pb.RUNNING:
            return
        job.timed_out = True
        runner = self.runners.get(job.runner_id)
        if runner is not None and runner.connected:
            self._interrupt(job, runner, self._timeout_reason(job), timeout=True)

    @staticmethod
    def _timeout_reason(job: _Job) -> str:
        return f"the cell ran longer than its timeout of {job.spec.timeout_s:g} s"

    # ------------------------------------------------------------------ events

    def _sample(self, job: _Job, event: pb.JobEvent) -> None:
        """A telemetry reading: live to followers, downsampled into the store."""
        job.last_metrics = event
        done = job.samples.add(event.time, event.metrics)
        if done is not None:
            self.store.add_metrics(job.id, *done)
        self._publish(job, event)

    def _store_samples(self, job: _Job) -> None:
        """Stores the readings of the interval still open, when the job's task ends."""
        done = job.samples.flush()
        if done is not None:
            self.store.add_metrics(job.id, *done)
        job.last_metrics = None

    def _publish(self, job: _Job, event: pb.JobEvent) -> None:
        for queue in job.subscribers:
            queue.put_nowait(event)

    def _emit(
        self, job: _Job, fields: dict[str, object] | None = None, **body: object
    ) -> pb.JobEvent:
        event = pb.JobEvent(job_id=job.id, seq=job.next_seq, time=time.time(), **body)  # type: ignore[arg-type]
        job.next_seq += 1
        self.store.update_job(job.id, event, **(fields or {}))
        self._publish(job, event)
        return event

    def _finish(self, job: _Job, state: int, message: str, error: pb.Error | None = None) -> None:
        self._store_samples(job)
        if error is not None:
            self._emit(job, error=error)
        job.state = state
        job.clear_timers()
        self._emit(
            job,
            {"state": state, "finished": time.time(), "message": message},
            finished=pb.Finished(state=state, message=message),  # type: ignore[arg-type]
        )
        self.jobs.pop(job.id, None)

    def _retry_or_fail(self, job: _Job, error: pb.Error, message: str) -> None:
        """After a failed attempt: queue it again when ``retries`` allows, else fail the job."""
        if job.attempt <= job.spec.retries and not job.cancel_reason:
            self._store_samples(job)
            job.state = pb.QUEUED
            job.clear_timers()
            job.timed_out = False
            self._emit(
                job,
                {"state": pb.QUEUED, "runner_id": ""},
                status=pb.Status(
                    state=pb.QUEUED,
                    message=f"attempt {job.attempt} failed ({message}); retrying "
                    f"(attempt {job.attempt + 1} of {job.spec.retries + 1})",
                    attempt=job.attempt,
                ),
            )
            self._handle(job.queued(front=True))
        else:
            self._finish(job, pb.FAILED, message, error)

    # ------------------------------------------------------------------ scheduling

    def _handle(self, event: Event) -> None:
        self._apply(self.scheduler.handle(event))

    def _apply(self, instructions: list[Instruction]) -> None:
        for ins in instructions:
            if isinstance(ins, Assign):
                self._assign(ins.job_id, ins.runner_id)
            elif isinstance(ins, StartRunner):
                if self._closing:  # it would outlive the executor; the next start starts it
                    continue
                self.runners[ins.runner_id] = _Runner(ins.runner_id, ins.pool)
                self._spawn(self._launch(ins.runner_id, ins.pool, ins.gpus))
            elif isinstance(ins, StopRunner):
                self._stop_runner(ins.runner_id, ins.reason)
            elif isinstance(ins, Unplaceable):
                job = self.jobs.get(ins.job_id)
                if job is not None:
                    error = pb.Error(
                        kind=pb.Error.SETUP, type_name="SchedulingError", message=ins.message
                    )
                    self._finish(job, pb.FAILED, ins.message, error)
            elif isinstance(ins, Waiting):
                job = self.jobs.get(ins.job_id)
                if job is not None:
                    self._emit(job, status=pb.Status(state=pb.QUEUED, message=ins.message))

    def _assign(self, job_id: str, runner_id: str) -> None:
        job = self.jobs.get(job_id)
        runner = self.runners.get(runner_id)
        if job is None or runner is None or runner.outbox is None:
            # The job was cancelled or the runner vanished in between: free the runner.
            self._handle(TaskDone(runner_id, time.time()))
            return
        secret_env = self._secret_env(job, runner_id)
        if secret_env is None:
            return
        job.attempt += 1
        job.state = pb.RUNNING
        job.runner_id = runner_id
        runner.job = job_id
        now = time.time()
        gpu_type, gpu_count = gpu_held_by(runner.pool)
        price = self.price_per_second(gpu_type, gpu_count)
        job.started, job.gpu_type, job.gpu_count, job.price = now, gpu_type, gpu_count, price
        job.samples = Downsampler(self.config.metrics_interval)
        self._emit(
            job,
            {
                "state": pb.RUNNING,
                "started": now,
                "attempt": job.attempt,
                "runner_id": runner_id,
                "gpu_type": gpu_type,
                "gpu_count": gpu_count,
                "price": price,
                "gpu_uuids": ",".join(
                    u for u, holder in self.scheduler.gpu_holders().items() if holder == runner_id
                ),
            },
            status=pb.Status(
                state=pb.RUNNING,
                message=f"running on {runner_id}",
                runner_id=runner_id,
                attempt=job.attempt,
                gpu_type=gpu_type,
                gpu_count=gpu_count,
                price_per_second=price,
            ),
        )
        task = pb.Task(
            job_id=job_id,
            attempt=job.attempt,
            first_seq=job.next_seq,
            spec=job.spec,
            secret_env=secret_env,
        )
        runner.outbox.put_nowait(pb.RunnerInstruction(task=task))
        if job.spec.timeout_s > 0:
            loop = asyncio.get_running_loop()
            job.timers.append(
                loop.call_later(job.spec.timeout_s, self._on_timeout, job_id, job.attempt)
            )

    async def _launch(self, runner_id: str, pool: Pool, gpus: tuple[str, ...] = ()) -> None:
        try:
            volumes = self._launch_volumes(pool)
        except ConfigError as err:
            self._start_failed(runner_id, pool, str(err))
            return
        launch = RunnerLaunch(
            runner_id=runner_id,
            control_url=self.config.control_url,
            token=self.config.token,
            image=pool.image,
            session=pool.session,
            cpu=pool.cpu,
            memory_mb=pool.memory_mb,
            gpu=pool.gpu,
            gpu_uuids=gpus,
            built=self.built.get(pool.image),
            volumes=volumes,
        )
        try:
            handle = await self.executor.start(launch)
        except Exception as err:
            self._start_failed(runner_id, pool, f"could not start a runner: {err}")
            return
        runner = self.runners.get(runner_id)
        if runner is None:  # stopped while starting
            await self.executor.kill(handle)
            return
        runner.handle = handle
        runner.pid = handle.pid
        self._spawn(self._watch(runner_id, handle))

    def _start_failed(self, runner_id: str, pool: Pool, message: str) -> None:
        log.error("runner %s: %s", runner_id, message)
        self.runners.pop(runner_id, None)
        waiting = self.scheduler.queued_in(pool)
        for job_id in waiting:
            self._handle(JobDequeued(job_id, time.time()))
        self._handle(RunnerGone(runner_id, time.time()))
        for job_id in waiting:
            job = self.jobs.get(job_id)
            if job is not None:
                error = pb.Error(kind=pb.Error.SETUP, type_name="RunnerStartError", message=message)
                self._finish(job, pb.FAILED, message, error)

    async def _watch(self, runner_id: str, handle: RunnerHandle) -> None:
        exit_info = await self.executor.wait(handle)
        self._runner_exited(runner_id, exit_info)

    def _stop_runner(self, runner_id: str, reason: str) -> None:
        runner = self.runners.get(runner_id)
        if runner is None:
            return
        log.info("stopping runner %s: %s", runner_id, reason)
        if runner.outbox is not None:
            runner.outbox.put_nowait(pb.RunnerInstruction(shutdown=pb.Shutdown(reason=reason)))
        if runner.handle is not None:
            handle = runner.handle

            async def kill_later() -> None:
                await asyncio.sleep(5.0)
                if not runner.exited:
                    await self.executor.kill(handle)

            self._spawn(kill_later())

    def _runner_exited(self, runner_id: str, exit_info: RunnerExit) -> None:
        runner = self.runners.pop(runner_id, None)
        if runner is None or runner.exited:
            return
        runner.exited = True
        if runner.lost_timer is not None:
            runner.lost_timer.cancel()
        log.info("runner %s ended: %s", runner_id, exit_info.describe())
        if not runner.ever_connected and runner.handle is not None and not self._closing:
            tail = self.executor.log_tail(runner.handle)
            self._start_failed(
                runner_id,
                runner.pool,
                f"the runner ended before it connected ({exit_info.describe()})"
                + (f"; its log ends with:\n{tail}" if tail else ""),
            )
            return
        self._handle(RunnerGone(runner_id, time.time()))
        job = self.jobs.get(runner.job)
        if job is not None and job.runner_id == runner_id and job.state == pb.RUNNING:
            self._job_lost_runner(job, exit_info)
        if runner.outbox is not None:
            runner.outbox.put_nowait(None)

    def _job_lost_runner(self, job: _Job, exit_info: RunnerExit) -> None:
        if job.cancel_reason and not job.timed_out:
            self._finish(job, pb.CANCELLED, job.cancel_reason)
            return
        if job.timed_out:
            message = f"the cell ran longer than its timeout of {job.spec.timeout_s:g} s; its runner was killed"
            error = pb.Error(kind=pb.Error.TIMEOUT, type_name="TimeoutError", message=message)
        elif self._closing:
            message = "the control plane was stopped while this cell ran, and its runner with it"
            error = pb.Error(kind=pb.Error.RUNNER_DIED, type_name="RunnerStopped", message=message)
        else:
            message = f"the runner running this cell died: {exit_info.describe()}"
            error = pb.Error(kind=pb.Error.RUNNER_DIED, type_name="RunnerDied", message=message)
        self._retry_or_fail(job, error, message)

    def _orphaned(self, job_id: str, attempt: int) -> None:
        """A job that was running when the control plane restarted never got its runner back."""
        job = self.jobs.get(job_id)
        if job is None or job.attempt != attempt or job.state != pb.RUNNING:
            return
        runner = self.runners.get(job.runner_id)
        if runner is not None and runner.connected:
            return
        self._forget_expected(runner)
        message = (
            f"the runner running this cell did not reconnect within {self.config.reconnect_grace:g} s "
            "after the control plane restarted"
        )
        self._retry_or_fail(
            job,
            pb.Error(kind=pb.Error.RUNNER_DIED, type_name="RunnerLost", message=message),
            message,
        )

    def _forget_expected(self, runner: _Runner | None) -> None:
        """Stops holding a place for a runner that has not come back since the restart
        (should it still come back, it is told to stop its stale cell)."""
        if runner is not None and runner.expected:
            self.runners.pop(runner.id, None)
            self._handle(RunnerGone(runner.id, time.time()))

    # ------------------------------------------------------------------ runners

    async def runner_session(
        self, requests: AsyncIterator[pb.RunnerMessage]
    ) -> AsyncIterator[pb.RunnerInstruction]:
        first = await anext(aiter(requests), None)
        if first is None or not first.HasField("hello"):
            return
        hello = first.hello
        runner = self._register(hello)
        outbox: asyncio.Queue[pb.RunnerInstruction | None] = asyncio.Queue()
        runner.outbox = outbox
        reader = asyncio.create_task(self._read_runner(runner, requests, outbox))
        self._connected(runner, hello)
        try:
            while True:
                ins = await outbox.get()
                if ins is None:
                    return
                yield ins
        finally:
            reader.cancel()
            if runner.outbox is outbox:
                runner.outbox = None

    def _register(self, hello: pb.RunnerHello) -> _Runner:
        runner = self.runners.get(hello.runner_id)
        pool = Pool(
            hello.image,
            hello.session,
            hello.resources.cpu,
            hello.resources.memory_mb,
            held_gpu(hello.resources),
            volumes=volumes_key(hello.volumes),
        )
        if runner is None or runner.expected:
            # A runner we did not start in this process: it reconnects after a restart.
            if runner is None:
                runner = _Runner(hello.runner_id, pool)
                self.runners[hello.runner_id] = runner
            runner.expected = False
            runner.handle = RunnerHandle(hello.runner_id, hello.pid)
            self._spawn(self._watch(hello.runner_id, runner.handle))
        if runner.lost_timer is not None:
            runner.lost_timer.cancel()
            runner.lost_timer = None
        runner.pool = pool
        runner.pid = hello.pid or runner.pid
        return runner

    def _connected(self, runner: _Runner, hello: pb.RunnerHello) -> None:
        runner.connected = runner.ever_connected = True
        busy_with = ""
        runner.job = ""
        if hello.current_job_id:
            if hello.busy:
                runner.job = hello.current_job_id  # so a replayed `finished` frees it
            for event in hello.replay:
                self._runner_event(runner, event)
            job = self.jobs.get(hello.current_job_id)
            if job is not None and job.state == pb.RUNNING and hello.busy:
                job.runner_id = runner.id
                busy_with = job.id
                if job.timed_out:
                    self._interrupt(job, runner, self._timeout_reason(job), timeout=True)
                elif job.cancel_reason:
                    self._interrupt(job, runner, job.cancel_reason)
            elif runner.job:
                busy_with = self._stop_stale_cell(runner, hello.current_job_id)
        self._handle(
            RunnerConnected(
                runner.id,
                runner.pool,
                time.time(),
                busy_with=busy_with,
                gpus=tuple(hello.gpu_uuids),
            )
        )

    def _stop_stale_cell(self, runner: _Runner, job_id: str) -> str:
        """A runner came back still running a job that ended here meanwhile (it was
        cancelled, or given up on): interrupt that cell, and kill the runner if it
        ignores that. Returns the job the runner stays busy with until then."""
        assert runner.outbox is not None
        runner.outbox.put_nowait(
            pb.RunnerInstruction(
                cancel=pb.CancelTask(job_id=job_id, reason="the job already ended")
            )
        )

        def kill_if_still_busy() -> None:
            if runner.job == job_id and not runner.exited and runner.handle is not None:
                self._spawn(self.executor.kill(runner.handle))

        asyncio.get_running_loop().call_later(self.config.cancel_grace, kill_if_still_busy)
        return job_id

    async def _read_runner(
        self,
        runner: _Runner,
        requests: AsyncIterator[pb.RunnerMessage],
        outbox: asyncio.Queue[pb.RunnerInstruction | None],
    ) -> None:
        try:
            async for message in requests:
                if message.HasField("events"):
                    for event in message.events.events:
                        self._runner_event(runner, event)
        except Exception as err:  # the stream broke: treated like a disconnect
            log.info("runner %s stream ended: %s", runner.id, err)
        finally:
            if runner.outbox is outbox:
                self._disconnected(runner)
            outbox.put_nowait(None)

    def _disconnected(self, runner: _Runner) -> None:
        runner.connected = False
        runner.outbox = None
        if runner.exited or self._closing:
            return
        # Its process may still be alive (a dropped connection): give it time to come back.
        loop = asyncio.get_running_loop()

        def give_up() -> None:
            if not runner.connected and not runner.exited:
                log.warning("runner %s did not reconnect; stopping it", runner.id)
                if runner.handle is not None:
                    self._spawn(self.executor.kill(runner.handle))
                else:
                    self._runner_exited(runner.id, RunnerExit(None))

        runner.lost_timer = loop.call_later(self.config.reconnect_grace, give_up)

    def _runner_event(self, runner: _Runner, event: pb.JobEvent) -> None:
        job = self.jobs.get(event.job_id)
        if event.HasField("metrics"):
            if job is not None and job.runner_id == runner.id:
                self._sample(job, event)
            return
        if job is None:
            # The job ended here already (cancelled, or given up on): its stored history
            # ends with `finished`, so late events are dropped. A runner's late end
            # still frees the runner.
            if event.HasField("finished") and runner.job == event.job_id:
                runner.job = ""
                self._handle(TaskDone(runner.id, time.time()))
            return
        if event.HasField("finished"):
            if event.seq < job.next_seq and self.store.has_events_from(job.id, event.seq):
                return
            self._task_finished(runner, job, event)
            return
        if event.HasField("error"):
            job.last_error_kind = event.error.kind
        if event.HasField("result"):
            self.touch_blobs(value_refs(event.result.values))
        if self.store.add_event(event):
            job.next_seq = max(job.next_seq, event.seq + 1)
            self._publish(job, event)

    def _task_finished(self, runner: _Runner, job: _Job, event: pb.JobEvent) -> None:
        runner.job = ""
        self._store_samples(job)
        job.next_seq = max(job.next_seq, event.seq)
        state = event.finished.state
        if (
            state == pb.FAILED
            and job.last_error_kind in RETRYABLE
            and job.attempt <= job.spec.retries
            and not job.cancel_reason
        ):
            self._retry_or_fail(job, pb.Error(), event.finished.message)
        else:
            job.state = state
            job.clear_timers()
            job.next_seq = event.seq + 1
            self.store.update_job(
                job.id, event, state=state, finished=event.time, message=event.finished.message
            )
            self._publish(job, event)
            self.jobs.pop(job.id, None)
        self._handle(TaskDone(runner.id, time.time()))

    # ------------------------------------------------------------------ secrets

    def _secret_env(self, job: _Job, runner_id: str) -> dict[str, str] | None:
        """The variables of the job's secrets, for the task about to go to ``runner_id``;
        None when they cannot be had: then the job has failed and the runner is free."""
        if not job.spec.secrets:
            return {}
        try:
            return secret_refs.environment(job.spec, job.adhoc_secrets, self.secret_store)
        except secret_refs.SecretsUnavailable as err:
            self._fail_secrets(job, str(err))
        self._handle(TaskDone(runner_id, time.time()))
        return None

    def _fail_secrets(self, job: _Job, message: str) -> None:
        error = pb.Error(kind=pb.Error.SETUP, type_name="SecretError", message=message)
        self._finish(job, pb.FAILED, message, error)

    # ------------------------------------------------------------------ health

    def price_per_second(self, gpu_type: str, count: int) -> float | None:
        """What a second of ``count`` GPUs of ``gpu_type`` costs (0 without GPUs; None
        where the type has no price). CPU and memory are not priced: on one's own
        hardware the GPUs are the scarce, costly part."""
        if not count:
            return 0.0
        return cost_usd(gpu_type, count, 1.0, self.config.gpu_prices)

    def gpu_listing(self) -> pb.ListGPUsReply:
        """This machine's GPUs and who holds them, for ``%remote_gpus``."""
        holders = self.scheduler.gpu_holders()
        reply = pb.ListGPUsReply(note=self.gpu_note)
        for gpu in self.scheduler.config.gpus:
            runner_id = holders.get(gpu.uuid, "")
            runner = self.runners.get(runner_id)
            reply.gpus.append(
                pb.GPUInfo(
                    index=gpu.index,
                    uuid=gpu.uuid,
                    name=gpu.name,
                    type=gpu.type,
                    memory_total=gpu.memory_total,
                    price_per_second=self.price_per_second(gpu.type, 1),
                    runner_id=runner_id,
                    job_id=runner.job if runner is not None else "",
                )
            )
        return reply

    def active_blob_refs(self) -> set[str]:
        """The blobs that queued and running jobs name, which must not be collected."""
        return {ref for job in self.jobs.values() for ref in spec_refs(job.spec)}

    def counts(self) -> tuple[int, int, int]:
        running = sum(j.state == pb.RUNNING for j in self.jobs.values())
        queued = sum(j.state == pb.QUEUED for j in self.jobs.values())
        return len(self.runners), running, queued

    # ------------------------------------------------------------------ volumes

    def _check_volumes(self, spec: pb.JobSpec) -> None:
        """Checks a job's mounts before it is queued, and names each volume's id in them
        (a runner's mounts are fixed when it starts, so they are part of its pool).

        Raises:
            ConfigError: a bad or colliding mount path, a volume that does not exist,
                an executor that cannot mount here, or a session whose runner has
                other volumes.
        """
        if spec.volumes:
            if self.volume_store is None:
                raise ConfigError(
                    "this control plane has no volume store; run the cell without volumes="
                )
            problem = self.executor.mount_problem()
            if problem:
                raise ConfigError(problem)
            pairs = check_mounts(
                [(m.path, m.name) for m in spec.volumes], self.volume_store.reserved
            )
            mounts = []
            for path, name in pairs:
                problem = self.executor.mount_path_problem(path)
                if problem:
                    raise ConfigError(problem)
                try:
                    record = self.volume_store.get(name)
                except VolumeMissing as err:
                    raise ConfigError(str(err)) from None
                mounts.append(pb.VolumeMount(name=name, path=path, volume_id=record.volume_id))
            del spec.volumes[:]
            spec.volumes.extend(mounts)
        if spec.session:
            wanted = volumes_key(spec.volumes)
            for runner in self.runners.values():
                same = runner.pool.session == spec.session and runner.pool.image == spec.image
                if same and runner.pool.volumes != wanted:
                    have = ", ".join(f"{p}={n}" for p, n, _ in runner.pool.volumes) or "none"
                    raise ConfigError(
                        f"session {spec.session!r} runs with volumes {have}: a session's "
                        "runner keeps the volumes it started with; give its cells the same "
                        "volumes=, or use another session name"
                    )

    def _launch_volumes(self, pool: Pool) -> tuple[LaunchVolume, ...]:
        if not pool.volumes:
            return ()
        if self.volume_store is None:
            raise ConfigError("this control plane has no volume store")
        out = []
        for path, name, volume_id in pool.volumes:
            try:
                record = self.volume_store.get(name)
            except VolumeMissing as err:
                raise ConfigError(str(err)) from None
            if record.volume_id != volume_id:
                raise ConfigError(
                    f"volume {name!r} was deleted and made again since the cell was "
                    "submitted; run the cell again"
                )
            shared = self.volume_store.shared_dir(record)
            out.append(LaunchVolume(name, volume_id, path, str(shared) if shared else ""))
        return tuple(out)

    def volume_users(self, name: str) -> list[str]:
        """The queued and running jobs that mount volume ``name``."""
        return [
            job.id for job in self.jobs.values() if any(m.name == name for m in job.spec.volumes)
        ]
