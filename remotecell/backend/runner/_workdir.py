"""The directory a task's cell runs in: the notebook's own, or a snapshot of it.

A job names the notebook's working directory (``pb.Workdir``; the rules and why the
kernel chooses are in ``remotecell.contract.workdir``). In place, the runner changes into
that path for the task; with a snapshot, it writes the files into a directory of its own
for the job (their blobs kept in a cache, so a warm runner fetches a file once) and
changes into that. Either way it returns to its own directory when the task ends: a warm
runner (a ``session=`` one too) serves kernels in other directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from remotecell._proto import pb
from remotecell.contract import workdir as rules
from remotecell.contract.errors import ConfigError
from remotecell.contract.events import Body
from remotecell.contract.values import content_hash

Emit = Callable[[Body], None]
Run = Callable[[Emit], pb.Finished]

#: The blob cache is emptied when it grows past this.
CACHE_BYTES = 4 * rules.MAX_TOTAL_BYTES


class WorkdirError(Exception):
    """The job's working directory cannot be entered; the message says why."""


class RunnerWorkdir:
    def __init__(self, fetch: Callable[[str], Any]) -> None:
        self._fetch = fetch
        self._root: Path | None = None
        self._cache_bytes = 0

    def around(self, task: pb.Task, run: Run) -> Run:
        """``run`` in the task's working directory, and back in this runner's own after."""
        workdir = task.spec.workdir
        if not workdir.path:
            return run

        def in_workdir(emit: Emit) -> pb.Finished:
            try:
                home = os.getcwd()
            except OSError:  # a cell removed the runner's own directory
                home = tempfile.gettempdir()
            made: Path | None = None
            try:
                if workdir.snapshot:
                    made = self._write_out(task, workdir)
                    target = str(made)
                else:
                    target = workdir.path
                os.chdir(target)
            except WorkdirError as err:
                if made is not None:
                    shutil.rmtree(made, ignore_errors=True)
                message = str(err)
                emit(pb.Error(kind=pb.Error.SETUP, type_name="WorkdirError", message=message))
                return pb.Finished(state=pb.FAILED, message=message)
            except (OSError, ValueError) as err:  # ValueError: a NUL in the path
                if made is not None:
                    shutil.rmtree(made, ignore_errors=True)
                reason = getattr(err, "strerror", None) or err
                message = (
                    f"the notebook's working directory {workdir.path} cannot be entered on "
                    f"the runner's machine ({reason}), so the cell did not run; "
                    "run it from a notebook in a directory that the runner can read"
                )
                emit(pb.Error(kind=pb.Error.SETUP, type_name="WorkdirError", message=message))
                return pb.Finished(state=pb.FAILED, message=message)
            try:
                return run(emit)
            finally:
                with contextlib.suppress(OSError):
                    os.chdir(home)
                if made is not None:
                    shutil.rmtree(made, ignore_errors=True)

        return in_workdir

    def _write_out(self, task: pb.Task, workdir: pb.Workdir) -> Path:
        """Writes the snapshot's files into a new directory for the task; returns it."""
        try:
            rules.check(workdir)
        except ConfigError as err:
            raise WorkdirError(str(err)) from None
        root = self._runner_root()
        job_dir = Path(tempfile.mkdtemp(prefix=f"{task.job_id}-", dir=root / "jobs"))
        try:
            for f in workdir.files:
                dest = job_dir / f.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self._cached(f.blob), dest)
                dest.chmod(0o755 if f.executable else 0o644)
        except Exception as err:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise WorkdirError(
                f"the notebook's working directory could not be copied to the runner: "
                f"{type(err).__name__}: {err}; run the cell again"
            ) from None
        return job_dir

    def _cached(self, digest: str) -> Path:
        cache = self._runner_root() / "blobs"
        path = cache / digest
        if path.exists():
            return path
        data = self._fetch(digest)
        if content_hash(data) != digest:
            raise ValueError(f"blob {digest} arrived with other content")
        if self._cache_bytes + len(data) > CACHE_BYTES:
            for old in cache.iterdir():
                old.unlink(missing_ok=True)
            self._cache_bytes = 0
        self._cache_bytes += len(data)
        tmp = cache / f".{digest}.tmp"
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
        return path

    def _runner_root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="remotecell-workdir-"))
            (self._root / "jobs").mkdir()
            (self._root / "blobs").mkdir()
        return self._root

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
