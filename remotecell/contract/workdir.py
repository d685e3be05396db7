"""Where a remote cell runs, so that relative paths resolve as they do in the notebook.

A job names the notebook kernel's working directory (``pb.Workdir``), in one of two ways:

* **In place.** Where the runner sees the kernel's files at the same paths, the job
  carries only the path, and the runner works in it for the cell (and returns to its own
  directory after: a warm runner serves kernels in other directories).
* **As a snapshot.** Where the runner is on another filesystem (a container, another
  node), the job carries a snapshot of the directory's small files, each a
  content-addressed blob (a file that did not change is not sent again), which the
  runner writes into a directory of its own for the job. What a cell writes there stays
  there.

The kernel learns which from the control plane: ``HealthReply.runners_share_filesystem``
says its runners see its files at the same paths (the local executor), and reading back
its blob directory's id (``contract.blobs``) proves the kernel sees the control plane's
files too. Only both together mean the runner sees the kernel's cwd; anything else gets
a snapshot. Sending the snapshot always and letting the runner choose would cost every
cell a walk and a hash of the directory on the one path that needs neither.

This module holds the rules both sides apply: the limits, the files left out by default,
and ``check``, which the control plane runs on every job and the runner on every
snapshot it writes out.
"""

from __future__ import annotations

import posixpath

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError
from remotecell.contract.values import is_content_hash

#: The ignore file a directory may hold: gitignore patterns, relative to the directory.
IGNORE_FILE = ".remotecellignore"
#: What a snapshot leaves out unless the ignore file says otherwise (``!pattern``):
#: version control, caches, checkpoints, environments, and dotenv files (secrets travel
#: as ``remotecell.Secret``). A directory holding ``pyvenv.cfg`` (a virtualenv) is left
#: out whatever its name.
DEFAULT_IGNORES = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    ".ipynb_checkpoints/",
    ".venv/",
    "venv/",
    ".tox/",
    ".nox/",
    "node_modules/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".DS_Store",
    ".env",
)
#: A file larger than this is left out of a snapshot (and named in the cell's output).
MAX_FILE_BYTES = 4 << 20
#: A directory whose small files add up to more than this, or number more than
#: ``MAX_FILES``, is not snapshotted: the cell runs in the runner's own directory.
MAX_TOTAL_BYTES = 32 << 20
MAX_FILES = 2000
MAX_PATH_CHARS = 4096


def check(workdir: pb.Workdir) -> None:
    """Checks a job's working directory as the control plane receives it.

    Raises:
        ConfigError: the path is not absolute or too long, or a snapshot's file has a
            path that leaves its directory, repeats, or a size past the limits.
    """
    path = workdir.path
    if not path and not workdir.snapshot and not workdir.files:
        return
    if not path.startswith("/") or len(path) > MAX_PATH_CHARS or "\0" in path:
        raise ConfigError(
            f"the job's working directory must be an absolute path of at most "
            f"{MAX_PATH_CHARS} characters, not {path[:100]!r}"
        )
    if workdir.files and not workdir.snapshot:
        raise ConfigError("the job's working directory lists files but is not a snapshot")
    if len(workdir.files) > MAX_FILES:
        raise ConfigError(
            f"the working directory's snapshot has {len(workdir.files)} files; "
            f"at most {MAX_FILES} travel"
        )
    seen: set[str] = set()
    total = 0
    for f in workdir.files:
        if not is_safe_relpath(f.path):
            raise ConfigError(
                f"the working directory's snapshot names {f.path[:100]!r}: a file's path "
                "must be relative, '/'-separated and stay inside the directory"
            )
        if f.path in seen:
            raise ConfigError(f"the working directory's snapshot names {f.path[:100]!r} twice")
        seen.add(f.path)
        if not is_content_hash(f.blob):
            raise ConfigError(f"the snapshot's file {f.path[:100]!r} names no valid blob hash")
        if f.size > MAX_FILE_BYTES:
            raise ConfigError(
                f"the snapshot's file {f.path[:100]!r} is over {size_text(MAX_FILE_BYTES)}"
            )
        total += f.size
    if total > MAX_TOTAL_BYTES:
        raise ConfigError(f"the working directory's snapshot is over {size_text(MAX_TOTAL_BYTES)}")


def is_safe_relpath(path: str) -> bool:
    """Whether ``path`` names a file strictly inside a directory, written with "/"."""
    if not path or len(path) > MAX_PATH_CHARS or "\0" in path or "\\" in path:
        return False
    if path.startswith("/") or posixpath.normpath(path) != path:
        return False
    return not any(part in ("", ".", "..") for part in path.split("/"))


def blob_refs(workdir: pb.Workdir) -> list[str]:
    """The blobs a working directory's snapshot names."""
    return [f.blob for f in workdir.files]


def size_text(n: int) -> str:
    """``n`` bytes in words: "512 bytes", "4 MiB"."""
    if n < 1 << 10:
        return f"{n} bytes"
    if n < 1 << 20:
        return f"{n / (1 << 10):.3g} KiB"
    return f"{n / (1 << 20):.3g} MiB"
