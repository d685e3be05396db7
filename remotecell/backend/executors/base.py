"""How a runner process gets started: the executor interface.

An executor only starts ``python -m remotecell.backend.runner`` somewhere (a local
process, a container, a Ray actor), with the command line and environment of the
runner's launch contract (``remotecell.backend.runner.launch``), can end it, and reports
how it ended. Everything
else (the protocol, streaming, cancellation) belongs to the runner and the controller
and is the same for every executor.
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from remotecell.backend.runner.launch import RunnerArgs

if TYPE_CHECKING:
    from remotecell.backend.images.builder import BuiltImage
    from remotecell.backend.volumes.mounts import LaunchVolume, RunnerMount
    from remotecell.contract.resources import GPUChoice


@dataclass(frozen=True)
class RunnerLaunch:
    """What a runner needs to start and find its way back: what the runner itself is
    told (``runner()``, its launch contract) and how the executor starts it."""

    runner_id: str
    control_url: str
    token: str
    #: SHA-256 of the certificate an https:// ``control_url`` presents.
    tls_fingerprint: str = ""
    image: str = ""
    session: str = ""
    env: dict[str, str] = field(default_factory=dict)
    #: What the runner may use: cores and MiB of memory (0: no limit), and the GPUs it holds:
    #: their type and count (None: no GPU) and their UUIDs, which are its alone.
    cpu: float = 0.0
    memory_mb: int = 0
    gpu: GPUChoice | None = None
    gpu_uuids: tuple[str, ...] = ()
    #: The built image to run in; None: the executor's default environment.
    built: BuiltImage | None = None
    #: Volumes to mount (see ``remotecell.backend.volumes.mounts``).
    volumes: tuple[LaunchVolume, ...] = ()

    def runner(
        self, control_url: str | None = None, mounts: Sequence[RunnerMount] = ()
    ) -> RunnerArgs:
        """What the runner of this launch is told (``remotecell.backend.runner.launch``
        turns it into its command line and environment): ``control_url`` overrides the
        address, where the runner sees it elsewhere; ``mounts`` are its volumes as the
        executor provides them."""
        return RunnerArgs(
            runner_id=self.runner_id,
            control_url=control_url or self.control_url,
            token=self.token,
            tls_fingerprint=self.tls_fingerprint,
            image=self.image,
            session=self.session,
            cpu=self.cpu,
            memory_mb=self.memory_mb,
            gpu=self.gpu,
            gpu_uuids=self.gpu_uuids,
            mounts=tuple(mounts),
        )

    def gpu_env(self) -> dict[str, str]:
        """``CUDA_VISIBLE_DEVICES`` for a runner on this machine: its GPUs and no others."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpu_uuids)}


@dataclass
class RunnerHandle:
    runner_id: str
    pid: int
    log_path: Path | None = None


@dataclass(frozen=True)
class RunnerExit:
    """How a runner process ended."""

    returncode: int | None  # None: unknown (not our child, or still running)
    #: The memory limit (MiB) the runner ran out of, when the OOM killer ended it.
    out_of_memory_mb: int = 0

    def describe(self) -> str:
        code = self.returncode
        if self.out_of_memory_mb:
            return (
                f"it ran out of memory: the cell used all of its memory={self.out_of_memory_mb} "
                "MiB and was killed; ask for more with memory="
            )
        if code is None:
            return "its connection dropped"
        if code < 0 or code > 128:
            signum = -code if code < 0 else code - 128
            try:
                name = signal.Signals(signum).name
            except ValueError:
                name = f"signal {signum}"
            hint = " (out of memory, or killed by hand)" if signum == signal.SIGKILL else ""
            return f"it was killed by {name}{hint}"
        return f"it exited with code {code}"


class Executor(ABC):
    """Starts and stops runner processes."""

    name: str = "base"
    #: Its runners see the control plane's files at the same paths (a notebook's working
    #: directory is then used in place; see ``remotecell.contract.workdir``).
    shares_host_filesystem: bool = False

    @abstractmethod
    async def start(self, launch: RunnerLaunch) -> RunnerHandle:
        """Starts a runner; returns once the process exists (not once it has connected).

        Raises:
            RuntimeError: the runner could not be started; the message says why.
        """

    @abstractmethod
    async def wait(self, handle: RunnerHandle) -> RunnerExit:
        """Waits until the runner's process has ended."""

    @abstractmethod
    async def kill(self, handle: RunnerHandle) -> None:
        """Ends the runner at once (SIGKILL or the equivalent)."""

    def log_tail(self, handle: RunnerHandle, lines: int = 20) -> str:
        if handle.log_path is None or not handle.log_path.exists():
            return ""
        text = handle.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Releases what the executor holds (runners are stopped by the controller)."""

    def mount_problem(self) -> str:
        """Why this executor's runners cannot mount volumes here ("" when they can)."""
        return ""

    def mount_path_problem(self, path: str) -> str:
        """Why a volume cannot be mounted at ``path`` (absolute, normalised, already
        checked as text) in this executor's runners; "" when it can."""
        return ""
