"""The embedded default: this user's local control plane, found or started on demand.

The control plane runs detached from the kernel that started it (its own process
session, output to ``DATA_DIR/logs/server.log``), so it is shared by the user's
kernels and outlives kernel restarts. A lock file keeps two kernels from starting two.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from remotecell.client.config import Endpoint, read_endpoint_file
from remotecell.contract.errors import ConnectionError

START_TIMEOUT = 30.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(data_dir: Path) -> Endpoint | None:
    """The endpoint of a live control plane advertised in ``data_dir``, if any."""
    found = read_endpoint_file(data_dir)
    if found is None:
        return None
    endpoint, pid = found
    return endpoint if _alive(pid) else None


def ensure_running(data_dir: Path, timeout: float = START_TIMEOUT) -> Endpoint:
    """Finds this user's control plane, starting one in the background if none runs."""
    endpoint = running(data_dir)
    if endpoint is not None:
        return endpoint
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(data_dir / "start.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            endpoint = running(data_dir)  # another kernel may have won the race
            if endpoint is not None:
                return endpoint
            return _start(data_dir, timeout)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start(data_dir: Path, timeout: float) -> Endpoint:
    log_dir = data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / "server.log"
    with contextlib.suppress(FileNotFoundError):
        (data_dir / "server.json").unlink()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "remotecell",
                "serve",
                "--embedded",
                "--data-dir",
                str(data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = read_endpoint_file(data_dir)
        if found is not None and found[1] == proc.pid:
            return found[0]
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-10:]
            raise ConnectionError(
                f"the local remotecell control plane exited at start (code {proc.returncode}); "
                f"its log {log_path} ends with:\n" + "\n".join(tail)
            )
        time.sleep(0.01)
    raise ConnectionError(
        f"the local remotecell control plane did not start within {timeout:g} s; see {log_path}"
    )


def stop(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stops the control plane advertised in ``data_dir``; False if none was running."""
    found = read_endpoint_file(data_dir)
    if found is None or not _alive(found[1]):
        return False
    pid = found[1]
    os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, 9)
    return True
