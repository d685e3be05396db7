"""Runners as local processes, in the control plane's own Python environment.

Each runner runs in its own process session with its output in a log file (never the
control plane's stdout: an inherited pipe would keep whoever reads it waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import psutil

from remotecell.backend.executors.base import Executor, RunnerExit, RunnerHandle, RunnerLaunch

TOKEN_ENV = "REMOTECELL_RUNNER_TOKEN"


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, log_dir: Path, python: str = sys.executable) -> None:
        self.log_dir = log_dir
        self.python = python
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, launch: RunnerLaunch) -> RunnerHandle:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{launch.runner_id}.log"
        env = {**os.environ, **launch.env, TOKEN_ENV: launch.token}
        env.pop("REMOTECELL_URL", None)
        env.pop("REMOTECELL_TOKEN", None)
        args = [
            self.python,
            "-m",
            "remotecell.backend.runner",
            "--runner-id",
            launch.runner_id,
            "--url",
            launch.control_url,
        ]
        if launch.image:
            args += ["--image", launch.image]
        if launch.session:
            args += ["--session", launch.session]
        with open(log_path, "ab") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as err:
                raise RuntimeError(
                    f"could not start a local runner with {self.python}: {err}"
                ) from err
        self._procs[launch.runner_id] = proc
        return RunnerHandle(launch.runner_id, proc.pid, log_path)

    async def wait(self, handle: RunnerHandle) -> RunnerExit:
        proc = self._procs.get(handle.runner_id)
        if proc is not None:
            code = await proc.wait()
            self._procs.pop(handle.runner_id, None)
            return RunnerExit(code)
        # A runner adopted after a control-plane restart is not our child: poll it.
        while _alive(handle.pid):
            await asyncio.sleep(0.2)
        return RunnerExit(None)

    async def kill(self, handle: RunnerHandle) -> None:
        proc = self._procs.get(handle.runner_id)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        if _alive(handle.pid) and _is_runner(handle.pid, handle.runner_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGKILL)

    async def close(self) -> None:
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in list(self._procs.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
        self._procs.clear()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_runner(pid: int, runner_id: str) -> bool:
    with contextlib.suppress(psutil.Error):
        cmd = psutil.Process(pid).cmdline()
        return "remotecell.backend.runner" in cmd and runner_id in cmd
    return False
