"""What the controller keeps of the control plane's configuration and of each active job."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from remotecell._proto import pb
from remotecell.backend.config import ServeConfig
from remotecell.backend.jobs.log import Feed
from remotecell.backend.jobs.pools import pool_of
from remotecell.backend.scheduler.lifecycle_events import LifecycleConfig
from remotecell.backend.scheduler.queue import MachineGPU, Pool, Scheduler, SchedulerConfig


@dataclass
class ControllerConfig:
    control_url: str  # the address runners connect to
    #: SHA-256 of the certificate an https:// ``control_url`` presents: runners pin it.
    tls_fingerprint: str = ""
    #: The data directory's owner: the user prewarmed runners serve.
    owner: str = ""
    #: What the control plane was started with (the runner policy, graces, retry delay,
    #: GPU prices, telemetry interval): ``backend/config.py`` declares each setting.
    settings: ServeConfig = field(default_factory=ServeConfig)
    tick: float = 1.0

    def lifecycle(self, default_image: str, gpus: tuple[MachineGPU, ...]) -> LifecycleConfig:
        """The lifecycle's and the queue's configuration, from the settings and what the
        control plane found at start (the default image, this machine's GPUs)."""
        settings = self.settings
        return LifecycleConfig(
            cancel_grace=settings.cancel_grace,
            reconnect_grace=settings.reconnect_grace,
            retry_delay=settings.retry_delay,
            queue=SchedulerConfig(
                runners=settings.runners,
                # Fresh per start, so new runners never collide with ones that reconnect.
                id_prefix=secrets.token_hex(2) + "-",
                default_image=default_image,
                default_owner=self.owner,
                gpus=gpus,
            ),
        )


@dataclass
class ActiveJob:
    """An active job as the shell needs it: its spec and its attempt's facts."""

    id: str
    spec: pb.JobSpec
    feed: Feed
    #: The user who submitted it: only runners serving that user take it.
    owner: str = ""
    state: int = pb.QUEUED
    runner_id: str = ""
    last_error_kind: int = -1
    #: The values of its ad-hoc secrets, by index in ``spec.secrets``: in memory only.
    adhoc_secrets: dict[int, dict[str, str]] = field(default_factory=dict, repr=False)
    #: The current attempt's start, GPUs and price per second (None: unpriced).
    started: float = 0.0
    gpu_type: str = ""
    gpu_count: int = 0
    price: float | None = 0.0
    #: The runner's ``finished`` event while the lifecycle decides what it means.
    finished: pb.JobEvent | None = None
    #: The seq of the input request the running cell waits on (``jobs/stdin.py``).
    input_seq: int | None = None

    @property
    def pool(self) -> Pool:
        return pool_of(self.spec, self.owner)

    @property
    def last_metrics(self) -> pb.JobEvent | None:
        return self.feed.last_metrics


def gpu_listing(
    scheduler: Scheduler,
    runner_job: Callable[[str], str],
    note: str,
    price: Callable[[str, int], float | None],
) -> pb.ListGPUsReply:
    """This machine's GPUs, who holds them, and what a second of each costs."""
    holders = scheduler.gpu_holders()
    reply = pb.ListGPUsReply(note=note)
    for gpu in scheduler.config.gpus:
        runner_id = holders.get(gpu.uuid, "")
        reply.gpus.append(
            pb.GPUInfo(
                index=gpu.index,
                uuid=gpu.uuid,
                name=gpu.name,
                type=gpu.type,
                memory_total=gpu.memory_total,
                price_per_second=price(gpu.type, 1),
                runner_id=runner_id,
                job_id=runner_job(runner_id) if runner_id else "",
            )
        )
    return reply
