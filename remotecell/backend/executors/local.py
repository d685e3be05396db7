"""Runners as local processes, in the control plane's own Python environment.

Each runner runs in its own process session with its output in a log file (never the
control plane's stdout: an inherited pipe would keep whoever reads it waiting).

A runner is forked from a runner template (``_forkserver``) that has already imported
IPython and grpc, which takes a runner's start from about half a second to a few tens
of milliseconds. Where forking is not possible (not Linux, ``fork=False``,
``REMOTECELL_LOCAL_FORK=0``, a runner in a built image (a venv: its own interpreter),
a launch whose ``PYTHON*`` variables differ from the template's, a template that died),
a runner is spawned as a fresh ``python -m remotecell.backend.runner`` instead; both
end up as the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import psutil

from remotecell.backend.executors import _cgroups, _forkserver
from remotecell.backend.executors._cgroups import RunnerGroups
from remotecell.backend.executors._forkserver import (
    FORK_ENV,
    ForkServer,
    TemplateUnavailable,
    fork_available,
)
from remotecell.backend.executors._forkserver import base_env as _base_env
from remotecell.backend.executors._forkserver import python_env as _python_env
from remotecell.backend.executors.base import Executor, RunnerExit, RunnerHandle, RunnerLaunch
from remotecell.backend.runner import launch as runner_launch
from remotecell.backend.volumes.mounts import RunnerMount

log = logging.getLogger("remotecell.executors.local")


class LocalExecutor(Executor):
    """Runs runners as local processes, forked from a runner template where possible.

    Args:
        log_dir: where each runner's log (``<runner_id>.log``) goes.
        python: the interpreter runners run in.
        fork: fork runners from a template; None: where available, unless
            ``REMOTECELL_LOCAL_FORK=0``.
        volume_cache: where runners' copies of volumes in a remote store are kept
            while they run; None: a directory in the system's temporary directory.
    """

    name = "local"
    shares_host_filesystem = True
    #: A template that died is replaced, but not sooner than this after it started.
    RESTART_AFTER = 5.0

    def __init__(
        self,
        log_dir: Path,
        python: str = sys.executable,
        fork: bool | None = None,
        volume_cache: Path | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.volume_cache = volume_cache or Path(tempfile.gettempdir()) / "remotecell-volumes"
        self._mount_problem: str | None = None
        self.python = python
        if fork is None:
            fork = os.environ.get(FORK_ENV, "1") != "0"
        self.fork = fork and fork_available()
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        #: Runners' CPU and memory limits (see _cgroups), by runner id.
        self._limits: dict[str, RunnerGroups] = {}
        self._limits_unavailable = ""
        _cgroups.remove_stale()
        self._forked: dict[str, tuple[ForkServer, int]] = {}
        self._template: ForkServer | None = None
        self._retired: list[ForkServer] = []
        if self.fork:
            self._start_template()

    # -- the template ------------------------------------------------------------

    def _start_template(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        early = _forkserver.take_early(self.python, _base_env())
        if early is not None:  # started with `remotecell serve`, importing meanwhile
            self._template = early
            return
        try:
            self._template = ForkServer(self.python, self.log_dir / "_template.log", _base_env())
        except OSError as err:
            log.warning("could not start the runner template (%s); spawning runners", err)
            self.fork = False

    def _usable_template(self) -> ForkServer | None:
        """The template to fork from; None to spawn. Replaces a dead one when it is due."""
        template = self._template
        if template is None or not template.broken:
            return template
        if template.unsupported:
            log.warning("%s; spawning runners from now on", template.broken)
            self._retire(template)
            self.fork = False
            return None
        if time.monotonic() - template.started >= self.RESTART_AFTER:
            log.warning("%s; starting a new one", template.broken)
            self._retire(template)
            self._start_template()
        return None  # a new template is still importing: spawn this one

    def _retire(self, template: ForkServer) -> None:
        self._retired.append(template)
        self._template = None

    # -- runners -----------------------------------------------------------------

    async def start(self, launch: RunnerLaunch) -> RunnerHandle:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{launch.runner_id}.log"
        built = launch.built
        runner_args, runner_env = runner_launch.build(
            launch.runner(mounts=self._volume_mounts(launch))
        )
        env = {
            **_base_env(),
            **(built.env if built else {}),
            **launch.env,
            **launch.gpu_env(),
            **runner_env,
        }
        cwd = built.workdir if built and built.workdir else os.getcwd()
        python = built.python if built and built.python else self.python
        args = runner_launch.command(python, runner_args)
        # The template is the control plane's own environment; a built image (a venv) has
        # its own interpreter and packages.
        template = self._usable_template() if self.fork and built is None else None
        if template is not None and _python_env(env) == _python_env(template.env):
            try:
                pid = await template.fork(args, env, cwd, str(log_path))
            except TemplateUnavailable as err:
                log.warning("runner %s spawned, not forked: %s", launch.runner_id, err)
                self._usable_template()  # replaces a dead template for the next runners
            else:
                self._forked[launch.runner_id] = (template, pid)
                handle = RunnerHandle(launch.runner_id, pid, log_path)
                self._confine(launch, handle)
                return handle
        handle = await self._spawn(launch.runner_id, args, env, cwd, log_path)
        self._confine(launch, handle)
        return handle

    def _confine(self, launch: RunnerLaunch, handle: RunnerHandle) -> None:
        """Puts a runner that asks for ``cpu=`` or ``memory=`` under those limits, where
        this machine allows it (see _cgroups); says once in the log where it does not."""
        if launch.cpu <= 0 and launch.memory_mb <= 0:
            return
        try:
            self._limits[launch.runner_id] = _cgroups.confine(
                launch.runner_id, handle.pid, launch.cpu, launch.memory_mb
            )
        except _cgroups.Unavailable as err:
            if not self._limits_unavailable:
                log.warning(
                    "local runners run without cpu=/memory= limits: %s; the docker executor "
                    "enforces them",
                    err,
                )
            self._limits_unavailable = str(err)

    async def _spawn(
        self, runner_id: str, args: list[str], env: dict[str, str], cwd: str, log_path: Path
    ) -> RunnerHandle:
        with open(log_path, "ab") as log_file:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as err:
                raise RuntimeError(f"could not start a local runner with {args[0]}: {err}") from err
        self._procs[runner_id] = proc
        return RunnerHandle(runner_id, proc.pid, log_path)

    async def wait(self, handle: RunnerHandle) -> RunnerExit:
        try:
            ended = await self._wait(handle)
        finally:
            self._drop_volume_copies(handle.runner_id)
            groups = self._limits.pop(handle.runner_id, None)
        if groups is not None:
            if ended.returncode == -signal.SIGKILL and groups.out_of_memory():
                ended = RunnerExit(ended.returncode, out_of_memory_mb=groups.memory_mb)
            groups.remove()
        return ended

    async def _wait(self, handle: RunnerHandle) -> RunnerExit:
        proc = self._procs.get(handle.runner_id)
        if proc is not None:
            code = await proc.wait()
            self._procs.pop(handle.runner_id, None)
            return RunnerExit(code)
        forked = self._forked.get(handle.runner_id)
        if forked is not None:
            template, pid = forked
            status = await template.wait(pid)
            if status is not None:
                self._forked.pop(handle.runner_id, None)
                return RunnerExit(status)
            # Its template died first: the runner is nobody's child of ours any more.
        # A runner adopted after a control-plane restart is not our child: poll it.
        while _alive(handle.pid):
            await asyncio.sleep(0.2)
        self._forked.pop(handle.runner_id, None)
        return RunnerExit(None)

    async def kill(self, handle: RunnerHandle) -> None:
        proc = self._procs.get(handle.runner_id)
        forked = self._forked.get(handle.runner_id)
        if proc is not None or forked is not None:
            # Each runner leads its own process group (setsid): its children go too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(handle.pid, signal.SIGKILL)
            return
        if _alive(handle.pid) and _is_runner(handle.pid, handle.runner_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGKILL)

    async def close(self) -> None:
        pids = [proc.pid for proc in self._procs.values()]
        pids += [pid for _, pid in self._forked.values()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        waits: list[Awaitable[int | None]] = [proc.wait() for proc in self._procs.values()]
        waits += [template.wait(pid) for template, pid in self._forked.values()]
        for waiting in waits:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(waiting, 5)
        for runner_id in [*self._procs, *self._forked]:
            self._drop_volume_copies(runner_id)
        for groups in self._limits.values():
            groups.remove()
        self._limits.clear()
        self._procs.clear()
        self._forked.clear()
        templates = [*self._retired, *([self._template] if self._template else [])]
        self._template = None
        self._retired.clear()
        for template in templates:
            await template.close()

    # -- volumes -----------------------------------------------------------------

    def mount_problem(self) -> str:
        if self._mount_problem is None:
            from remotecell.backend.volumes.namespace import probe

            self._mount_problem = probe()
        return self._mount_problem

    def mount_path_problem(self, path: str) -> str:
        # Local runners mount on this machine's own tree, where a symlink could lead a
        # harmless-looking path into a directory the runner needs.
        from remotecell.backend.volumes.namespace import symlink_problem

        return symlink_problem(path)

    def _volume_mounts(self, launch: RunnerLaunch) -> list[RunnerMount]:
        """The runner mounts its volumes itself, in a mount namespace of its own: a
        directory store's directory as it is, or an empty copy it fills and commits."""
        mounts = []
        for index, volume in enumerate(launch.volumes):
            if volume.shared_dir:
                source, sync = volume.shared_dir, False
            else:
                copy = self._volume_copies(launch.runner_id) / str(index)
                copy.mkdir(parents=True, exist_ok=True)
                source, sync = str(copy), True
            mounts.append(RunnerMount(volume.mount, source=source, sync=sync))
        return mounts

    def _volume_copies(self, runner_id: str) -> Path:
        return self.volume_cache / runner_id.replace("/", "_")

    def _drop_volume_copies(self, runner_id: str) -> None:
        shutil.rmtree(self._volume_copies(runner_id), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_runner(pid: int, runner_id: str) -> bool:
    with contextlib.suppress(psutil.Error):
        cmd = psutil.Process(pid).cmdline()
        return runner_launch.RUNNER_MODULE in cmd and runner_id in cmd
    return False
