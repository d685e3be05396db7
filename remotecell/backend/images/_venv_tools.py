"""What the venv builder runs on this machine: uv, the interpreters it finds, and a step's
commands, their output streamed line by line; a step past its timeout ends with its whole
process tree.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import os
import shutil
import signal
from pathlib import Path

from remotecell._proto import pb
from remotecell.backend.images.builder import BuildLog, step_failed
from remotecell.contract.errors import ImageBuildError

TOOL_ENV = {
    "UV_PYTHON_DOWNLOADS": "never",  # a missing Python is an error, not a 30 MB download
    "NO_COLOR": "1",
    "PYTHONUNBUFFERED": "1",
}


class Python:
    def __init__(self, executable: str, version: str) -> None:
        self.executable = executable
        self.version = version  # "3.11"


def find_uv() -> str:
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise ImageBuildError(
        "the venv builder needs uv, which is not installed here; `pip install uv`"
    )


async def find_python(uv: str, spec: pb.ImageSpec) -> Python:
    """The interpreter uv finds on this machine for ``spec.python`` (never a download)."""
    request = spec.python
    proc = await asyncio.create_subprocess_exec(
        uv,
        "python",
        "find",
        "--no-project",
        request,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **TOOL_ENV},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    executable = out.decode().strip()
    if proc.returncode != 0 or not executable:
        raise step_failed(
            spec,
            -1,
            f"no Python {request} interpreter was found on this machine; install one "
            f"(`uv python install {request}`) or ask for another python= version",
            err.decode(errors="replace"),
        )
    probe = await asyncio.create_subprocess_exec(
        executable,
        "-c",
        "import sys; print('%d.%d' % sys.version_info[:2])",
        stdout=asyncio.subprocess.PIPE,
    )
    version = (await probe.communicate())[0].decode().strip()
    return Python(executable, version)


async def run_tool(
    spec: pb.ImageSpec,
    index: int,
    argv: list[str],
    log: BuildLog,
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    what: str = "",
) -> None:
    """Runs one tool, its output streamed into ``log``; fails the step when it fails."""
    full_env = {**os.environ, **TOOL_ENV, **(env or {})}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=full_env,
            start_new_session=True,  # so a timeout ends the whole tree the step started
        )
    except OSError as err:
        raise step_failed(spec, index, f"cannot start {argv[0]}: {err.strerror}") from None
    lines: collections.deque[str] = collections.deque(maxlen=200)

    def emit(line: str) -> None:
        lines.append(line)
        log(line)

    try:
        await asyncio.wait_for(_pump(proc, emit), timeout)
    except asyncio.TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise step_failed(
            spec,
            index,
            f"did not finish within {timeout:.0f} s and was stopped",
            "\n".join(lines),
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        who = what or Path(argv[0]).name
        raise step_failed(
            spec, index, f"{who} failed with exit code {proc.returncode}", "\n".join(lines)
        )


async def _pump(proc: asyncio.subprocess.Process, emit: BuildLog) -> None:
    """Streams a process's output into ``emit`` line by line (``\\r`` ends a line too:
    progress bars) until it exits."""
    assert proc.stdout is not None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while chunk := await proc.stdout.read(65536):
        pending += decoder.decode(chunk)
        *complete, pending = pending.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        for line in complete:
            if line.strip():
                emit(line.rstrip())
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        emit(pending.rstrip())
    await proc.wait()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
