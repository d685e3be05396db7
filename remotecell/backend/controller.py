"""The control plane's async shell over the job lifecycle: it carries decisions out.

Every decision about jobs and runners over time (queueing, placement, retries,
timeouts, cancel grace, lost and returning runners, stopping runners) is the pure
``Lifecycle``'s (``scheduler/lifecycle.py``). The controller turns what happens into its
events (a submission, a runner's hello or end, a clock tick at the next deadline) and
carries out its instructions with the parts below it: the job log (``jobs/log.py``:
stores every event before anyone sees it, fans events out), the runner sessions
(``jobs/sessions.py``: runner processes and connections) and admission
(``jobs/admission.py``: images and volumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING

from remotecell._proto import pb
from remotecell.backend.executors.base import Executor, RunnerExit, RunnerLaunch
from remotecell.backend.images.builder import BuiltImage, is_progress
from remotecell.backend.jobs import admission, stdin
from remotecell.backend.jobs.active import ActiveJob, ControllerConfig, gpu_listing
from remotecell.backend.jobs.log import JobLog, JobNotFound
from remotecell.backend.jobs.pools import runner_pool
from remotecell.backend.jobs.sessions import RunnerSessions
from remotecell.backend.scheduler import lifecycle_events as lc
from remotecell.backend.scheduler.lifecycle import Lifecycle
from remotecell.backend.scheduler.queue import (
    MachineGPU,
    Pool,
    Prewarm,
    Scheduler,
    StartRunner,
    StopRunner,
    Tick,
    Waiting,
)
from remotecell.backend.secrets import refs as secret_refs
from remotecell.backend.secrets.store import SecretStore
from remotecell.backend.state.blobs import spec_refs
from remotecell.backend.state.credentials import CredentialStore, Principal
from remotecell.backend.state.store import Store
from remotecell.backend.volumes.store import VolumeStore
from remotecell.contract.errors import ConfigError, ImageBuildError
from remotecell.contract.events import is_end, is_sample
from remotecell.contract.resources import GPURequest, cost_usd
from remotecell.contract.values import value_refs

if TYPE_CHECKING:
    from remotecell.backend.images.cache import ImageCache

__all__ = ["Controller", "ControllerConfig", "JobNotFound"]

log = logging.getLogger("remotecell.controller")


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
        credentials: CredentialStore | None = None,
    ) -> None:
        self.config = config
        #: Mints each runner's own credential; None: runners get none (tests of the
        #: controller alone, whose runners never connect).
        self.credentials = credentials
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
        self.lifecycle = Lifecycle(
            config.lifecycle(default_image.id if default_image is not None else "", gpus)
        )
        self.log = JobLog(store, config.settings.metrics_interval)
        self.sessions = RunnerSessions(executor, self)
        self.jobs: dict[str, ActiveJob] = {}
        self.started = time.time()
        #: Where the control plane's HTTP side listens ("" when it is off), for Health.
        self.http_url = ""
        self._ticker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: When the ticker wakes next by itself; an earlier deadline wakes it sooner.
        self._sleep_until = math.inf
        self._closing = False
        #: Told of every job's end: (job id, its state, the message it ended with).
        self.job_listeners: list[Callable[[str, int, str], None]] = []

    @property
    def scheduler(self) -> Scheduler:
        return self.lifecycle.queue

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Picks up where the last control plane left off: queued jobs are queued again;
        running jobs wait ``reconnect_grace`` for their runners to reconnect."""
        rows = self.store.active_jobs()
        now = time.time()
        # Running jobs first: their runners still count against ``max_runners``, so the
        # queued jobs below must not start new runners in their place.
        for row in rows:
            if row.state == pb.QUEUED:
                continue
            job = self._track(row.id, row.spec, self.store.next_seq(row.id), row.owner)
            job.state, job.runner_id = row.state, row.runner_id
            job.started, job.gpu_type, job.gpu_count, job.price = (
                row.started,
                row.gpu_type,
                row.gpu_count,
                row.price,
            )
            self._handle(
                lc.JobRestored(
                    job.id,
                    job.pool,
                    now,
                    row.runner_id,
                    row.attempt,
                    row.started,
                    gpu=GPURequest.from_proto(row.spec.resources.gpu),
                    retries=row.spec.retries,
                    timeout_s=row.spec.timeout_s,
                    gpus=tuple(row.gpu_uuids),
                )
            )
        for row in rows:
            if row.state == pb.QUEUED:
                job = self._track(row.id, row.spec, self.store.next_seq(row.id), row.owner)
                self._submitted(job, now)
                if secret_refs.needs_adhoc(job.spec):
                    failure = lc.Failure(pb.Error.SETUP, "SecretError", secret_refs.ADHOC_LOST)
                    self._handle(lc.JobFailed(job.id, failure, now))
                    continue
                self._admit(job)
        self._ticker = asyncio.create_task(self._tick_forever())
        if self.config.settings.runners.prewarm:
            self._handle(Prewarm(self.config.settings.runners.prewarm, time.time()))

    async def close(self) -> None:
        self._closing = True
        self._handle(lc.Closing(time.time()))
        if self._ticker:
            self._ticker.cancel()
        await self.sessions.close()

    async def _tick_forever(self) -> None:
        """Ticks the lifecycle every ``tick`` seconds, and at each of its deadlines."""
        while True:
            deadline = self.lifecycle.next_deadline()
            delay = self.config.tick
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.time()))
            self._wake.clear()
            self._sleep_until = time.time() + delay
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
                continue  # an earlier deadline came up: sleep until it instead
            self._handle(Tick(time.time()))

    def _track(self, job_id: str, spec: pb.JobSpec, next_seq: int, owner: str) -> ActiveJob:
        job = ActiveJob(job_id, spec, self.log.open(job_id, next_seq), owner)
        self.jobs[job_id] = job
        return job

    # ------------------------------------------------------------------ clients

    def check_admissible(self, spec: pb.JobSpec, owner: str = "") -> None:
        """The checks :meth:`submit` makes, without submitting: for a spec kept to be
        submitted later (a deployment's replicas), whose secrets must be stored ones.

        Raises:
            ConfigError: as :meth:`submit`, or the spec carries ad-hoc secret values.
        """
        if secret_refs.needs_adhoc(spec):
            raise ConfigError(
                "a deployment's secrets must be stored ones (`remotecell secret create`): "
                "Secret.from_dict and Secret.from_dotenv values are never stored"
            )
        self._check_gpus(spec)
        probe = pb.JobSpec()
        probe.CopyFrom(spec)
        secret_refs.take_adhoc(probe, self.secret_store, owner)
        admission.check_volumes(
            probe, self.volume_store, self.executor, self.lifecycle.runner_pools(), owner
        )

    def submit(self, spec: pb.JobSpec, owner: str = "") -> str:
        """Accepts a job of the user ``owner``, whose every field the servicer has
        checked (``contract.jobs.check_spec``); returns its id.

        Raises:
            ConfigError: the spec asks for GPUs in a way that is not valid or that this
                machine can never serve, names a secret that is missing, lacks a required
                key or cannot be read, or mounts volumes that cannot be mounted.
        """
        self._check_gpus(spec)  # refused before a job exists: the client gets the sentence
        adhoc_secrets = secret_refs.take_adhoc(spec, self.secret_store, owner)  # not stored
        admission.name_image(spec, self.default_image)
        if self.images is not None and (spec.image_spec.id or spec.image):
            self.images.store.claim(spec.image_spec.id or spec.image, owner)
        admission.check_volumes(
            spec, self.volume_store, self.executor, self.lifecycle.runner_pools(), owner
        )
        job_id = "job-" + secrets.token_hex(5)
        accepted = pb.JobEvent(
            job_id=job_id, seq=0, time=time.time(), accepted=pb.Accepted(state=pb.QUEUED)
        )
        self.store.create_job(job_id, spec, accepted, owner)
        job = self._track(job_id, spec, next_seq=1, owner=owner)
        job.adhoc_secrets = adhoc_secrets
        self._submitted(job, time.time())
        self._admit(job)
        return job_id

    def _check_gpus(self, spec: pb.JobSpec) -> None:
        """Raises ConfigError if no choice of the spec's GPU request could ever fit here."""
        never = self.lifecycle.queue.never_fits(GPURequest.from_proto(spec.resources.gpu))
        if never:
            raise ConfigError(never)

    def _submitted(self, job: ActiveJob, now: float) -> None:
        spec = job.spec
        self._handle(
            lc.JobSubmitted(
                job.id,
                job.pool,
                now,
                gpu=GPURequest.from_proto(spec.resources.gpu),
                retries=spec.retries,
                timeout_s=spec.timeout_s,
            )
        )

    def _admit(self, job: ActiveJob) -> None:
        """Queues a job, once its image (if it names one) is built."""
        if not job.spec.image or job.spec.image in self.built:
            self._handle(lc.JobReady(job.id, time.time()))
        else:
            self.sessions.spawn(self._prepare_image(job))

    async def _prepare_image(self, job: ActiveJob) -> None:
        image_id = job.spec.image
        loop = asyncio.get_running_loop()

        def log_line(line: str) -> None:
            if self.lifecycle.job_state(job.id) == pb.QUEUED:
                self.log.emit(
                    job.feed,
                    body=pb.Build(image_id=image_id, line=line, progress=is_progress(line)),
                )

        def log_threadsafe(line: str) -> None:  # builders may log from a worker thread
            loop.call_soon_threadsafe(log_line, line)

        try:
            built = await admission.prepare_image(
                job.spec, self.images, self.builder, self.fetch_blob, log_threadsafe
            )
        except (ImageBuildError, ConfigError) as err:
            await asyncio.sleep(0)  # let the log lines queued above land first
            failure = lc.Failure(pb.Error.IMAGE_BUILD, type(err).__name__, str(err))
            summary = str(err).splitlines()[0]
            self._handle(lc.JobFailed(job.id, failure, time.time(), summary))
            return
        await asyncio.sleep(0)
        self.built[image_id] = built
        self._handle(lc.JobReady(job.id, time.time()))

    async def follow(self, job_id: str, from_seq: int = 0) -> AsyncIterator[list[pb.JobEvent]]:
        """The job's events from ``from_seq`` (see ``JobLog.follow``)."""
        async for batch in self.log.follow(job_id, from_seq):
            yield batch

    async def cancel(self, job_id: str, reason: str = "") -> tuple[int, bool]:
        """Cancels a job; returns (state afterwards, whether it was running)."""
        reason = reason or "cancelled by the user"
        job = self.jobs.get(job_id)
        if job is None:
            row = self.store.get_job(job_id)
            if row is None:
                raise JobNotFound(job_id)
            return row.state, False
        was_running = job.state == pb.RUNNING
        self._handle(lc.CancelRequested(job_id, reason, time.time()))
        # Answer with the job's end, not "running": the cell stops (or its runner is
        # killed) within the cancel grace.
        deadline = time.monotonic() + min(self.config.settings.cancel_grace + 3.0, 20.0)
        while job_id in self.jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        row = self.store.get_job(job_id)
        return (row.state if row is not None else job.state), was_running

    # ------------------------------------------------------------------ decisions carried out

    def _handle(self, event: lc.Event) -> None:
        for instruction in self.lifecycle.handle(event):
            self._carry(instruction)
        deadline = self.lifecycle.next_deadline()
        if deadline is not None and deadline < self._sleep_until:
            self._wake.set()

    def _carry(self, ins: lc.Instruction) -> None:
        if isinstance(ins, lc.SendTask):
            self._send_task(ins)
        elif isinstance(ins, lc.Interrupt):
            cancel = pb.CancelTask(job_id=ins.job_id, reason=ins.reason, timeout=ins.timeout)
            self.sessions.send(ins.runner_id, pb.RunnerInstruction(cancel=cancel))
        elif isinstance(ins, StartRunner):
            self.sessions.spawn(self._launch(ins.runner_id, ins.pool, ins.gpus))
        elif isinstance(ins, StopRunner):
            log.info("stopping runner %s: %s", ins.runner_id, ins.reason)
            shutdown = pb.Shutdown(reason=ins.reason)
            self.sessions.send(ins.runner_id, pb.RunnerInstruction(shutdown=shutdown))
        elif isinstance(ins, lc.KillRunner):
            log.warning("killing runner %s: %s", ins.runner_id, ins.reason)
            self.sessions.kill(ins.runner_id)
        elif isinstance(ins, Waiting):
            job = self.jobs.get(ins.job_id)
            if job is not None:
                self.log.waiting(job.feed, ins.message)
        elif isinstance(ins, lc.Retrying):
            self._retrying(ins)
        elif isinstance(ins, lc.JobEnded):
            self._ended(ins)

    def _send_task(self, ins: lc.SendTask) -> None:
        job = self.jobs[ins.job_id]
        now = time.time()
        try:
            secret_env = secret_refs.environment(
                job.spec, job.adhoc_secrets, self.secret_store, job.owner
            )
        except secret_refs.SecretsUnavailable as err:
            failure = lc.Failure(pb.Error.SETUP, "SecretError", str(err))
            self._handle(lc.JobFailed(job.id, failure, now))
            return
        if not self.sessions.connected(ins.runner_id):
            self._handle(lc.TaskUndelivered(job.id, ins.runner_id, now))
            return
        held = (self.lifecycle.runner_pool(ins.runner_id) or Pool()).gpu
        job.state, job.runner_id, job.started = pb.RUNNING, ins.runner_id, now
        job.gpu_type, job.gpu_count = (held.type, held.count) if held else ("", 0)
        job.price = self.price_per_second(job.gpu_type, job.gpu_count)
        gpus = [u for u, r in self.scheduler.gpu_holders().items() if r == ins.runner_id]
        self.log.running(
            job.feed, ins.attempt, ins.runner_id, job.gpu_type, job.gpu_count, job.price, gpus, now
        )
        task = pb.Task(
            job_id=job.id,
            attempt=ins.attempt,
            first_seq=job.feed.next_seq,
            spec=job.spec,
            secret_env=secret_env,
        )
        self.sessions.send(ins.runner_id, pb.RunnerInstruction(task=task))

    def _retrying(self, ins: lc.Retrying) -> None:
        job = self.jobs[ins.job_id]
        job.state, job.runner_id, job.last_error_kind, job.input_seq = pb.QUEUED, "", -1, None
        self.log.retrying(job.feed, ins.attempt, ins.message, ins.delay, job.spec.retries)

    def _ended(self, ins: lc.JobEnded) -> None:
        job = self.jobs.pop(ins.job_id)
        job.state = ins.state
        if ins.by_runner and job.finished is not None:
            self.log.end_samples(job.feed)
            self.log.finish(job.feed, job.finished)
        else:
            f = ins.failure
            error = None
            if f is not None:
                error = pb.Error(kind=f.kind, type_name=f.type_name, message=f.message)  # type: ignore[arg-type]
            self.log.ended(job.feed, ins.state, ins.message, error)
        self.log.close(job.feed)
        message = ins.message
        if ins.by_runner and job.finished is not None:
            message = job.finished.finished.message
        for listener in self.job_listeners:
            listener(job.id, ins.state, message)

    async def _launch(self, runner_id: str, pool: Pool, gpus: tuple[str, ...] = ()) -> None:
        try:
            volumes = admission.launch_volumes(pool, self.volume_store)
        except ConfigError as err:
            self.runner_start_failed(runner_id, str(err))
            return
        launch = RunnerLaunch(
            runner_id=runner_id,
            control_url=self.config.control_url,
            tls_fingerprint=self.config.tls_fingerprint,
            token=self._runner_credential(runner_id, pool),
            image=pool.image,
            session=pool.session,
            cpu=pool.cpu,
            memory_mb=pool.memory_mb,
            gpu=pool.gpu,
            gpu_uuids=gpus,
            built=self.built.get(pool.image),
            volumes=volumes,
        )
        await self.sessions.launch(launch, wanted=lambda: not self._closing)

    # ------------------------------------------------------------------ what runners report

    def _runner_credential(self, runner_id: str, pool: Pool) -> str:
        if self.credentials is None:
            return ""
        names = frozenset(m.name for m in pool.volumes)
        return self.credentials.mint_runner(runner_id, pool.owner, names)

    def runner_hello(self, runner_id: str, hello: pb.RunnerHello, owner: str = "") -> None:
        # Replayed events first: a replayed ``finished`` frees the runner before it is
        # offered a new job.
        for event in hello.replay:
            self.runner_event(runner_id, event)
        self._handle(
            lc.RunnerUp(
                runner_id,
                runner_pool(hello, owner),
                time.time(),
                current_job=hello.current_job_id,
                busy=hello.busy,
                gpus=tuple(hello.gpu_uuids),
            )
        )

    def runner_event(self, runner_id: str, event: pb.JobEvent) -> None:
        job = self.jobs.get(event.job_id)
        if job is not None and job.runner_id != runner_id:
            # Only the runner running a job speaks for it. An end from a runner the job
            # has left may free that runner (the lifecycle checks it was that runner's
            # job); nothing else of it is kept.
            if is_end(event):
                self._handle(self._task_finished(runner_id, event))
            else:
                log.warning("runner %s sent an event of job %s, not its own", runner_id, job.id)
            return
        if is_sample(event):
            if job is not None and job.state == pb.RUNNING and job.runner_id == runner_id:
                self.log.sample(job.feed, event)
            return
        if job is None:
            # The job ended here already (cancelled, or given up on): its stored history
            # ends with `finished`, so late events are dropped; a late end frees the runner.
            if is_end(event):
                self._handle(self._task_finished(runner_id, event))
            return
        if is_end(event):
            if self.log.is_stored(job.feed, event):
                return
            # A retry's status takes the number of the attempt's `finished`, which is
            # not stored then.
            job.feed.next_seq = max(job.feed.next_seq, event.seq)
            job.finished = event
            self._handle(self._task_finished(runner_id, event, job.last_error_kind))
            job.finished = None
            return
        if event.HasField("error"):
            job.last_error_kind = event.error.kind
        if event.HasField("result"):
            self.touch_blobs(value_refs(event.result.values))
        stdin.observe(job, event)
        self.log.record(job.feed, event)

    @staticmethod
    def _task_finished(runner_id: str, event: pb.JobEvent, error_kind: int = -1) -> lc.Event:
        return lc.TaskFinished(
            runner_id,
            event.job_id,
            event.finished.state,
            event.finished.message,
            time.time(),
            error_kind,
        )

    def runner_down(self, runner_id: str) -> None:
        self._handle(lc.RunnerDown(runner_id, time.time()))

    def runner_exited(self, runner_id: str, exit_info: RunnerExit) -> None:
        if self.credentials is not None:
            self.credentials.drop_runner(runner_id)
        tail = ""
        if not self.lifecycle.runner_ever_connected(runner_id):
            tail = self.sessions.log_tail(runner_id)
        self._handle(lc.RunnerExited(runner_id, time.time(), exit_info.describe(), tail))

    def runner_start_failed(self, runner_id: str, message: str) -> None:
        if self.credentials is not None:
            self.credentials.drop_runner(runner_id)
        log.error("runner %s: %s", runner_id, message)
        self._handle(lc.RunnerStartFailed(runner_id, time.time(), message))

    async def runner_session(
        self, requests: AsyncIterator[pb.RunnerMessage], caller: Principal
    ) -> AsyncIterator[pb.RunnerInstruction]:
        async for instruction in self.sessions.session(requests, caller):
            yield instruction

    # ------------------------------------------------------------------ queries

    def price_per_second(self, gpu_type: str, count: int) -> float | None:
        """What a second of ``count`` GPUs of ``gpu_type`` costs (0 without GPUs; None
        where the type has no price). CPU and memory are not priced: on one's own
        hardware the GPUs are the scarce, costly part."""
        if not count:
            return 0.0
        return cost_usd(gpu_type, count, 1.0, self.config.settings.gpu_prices)

    def gpu_listing(self) -> pb.ListGPUsReply:
        """This machine's GPUs and who holds them, for ``%remote_gpus``."""
        return gpu_listing(
            self.scheduler, self.lifecycle.runner_job, self.gpu_note, self.price_per_second
        )

    def active_blob_refs(self) -> set[str]:
        """The blobs that queued and running jobs name, which must not be collected."""
        return {ref for job in self.jobs.values() for ref in spec_refs(job.spec)}

    def counts(self) -> tuple[int, int, int]:
        running = sum(j.state == pb.RUNNING for j in self.jobs.values())
        queued = sum(j.state == pb.QUEUED for j in self.jobs.values())
        return len(self.lifecycle.runner_ids), running, queued

    def volume_users(self, volume_id: str) -> list[str]:
        """The queued and running jobs that mount the volume ``volume_id``."""
        return [
            job.id
            for job in self.jobs.values()
            if any(m.volume_id == volume_id for m in job.spec.volumes)
        ]
