"""Mounting volumes for local runners: a private mount namespace and bind mounts.

A local runner is an ordinary process on the control plane's machine, so to see a
volume at ``/models`` it needs a mount that nobody else sees. Before it connects, the
runner moves into a mount namespace of its own (``unshare(CLONE_NEWNS)``), makes every
mount in it private (so nothing propagates back to the host), and bind-mounts each
volume's directory at its path. Its cells, and the processes they start, see the
mounts; no other process does, and they vanish with the runner.

This needs ``CAP_SYS_ADMIN``: as root it always works. As another user it works where
the kernel lets unprivileged users make user namespaces (``unshare -Ur``): the runner
then makes one that maps only its own user and group, so the files it writes belong to
that user as before. Where neither works, ``probe`` says so and the control plane
refuses cells with ``volumes=`` on the local executor, naming the docker executor.

The mount point is created if missing (``mkdir -p``, on the host: a bind mount needs an
existing directory) and stays behind, empty, after the runner ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import tempfile

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)

ALTERNATIVE = (
    "run the control plane as root, allow unprivileged user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1), or use the docker executor "
    "(`remotecell serve --executor docker`), which mounts volumes into containers"
)


class MountUnavailable(OSError):
    """This process cannot have mounts of its own; the message says what to do."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def enter_private_namespace() -> None:
    """Moves this process into a mount namespace of its own, all its mounts private.

    Raises:
        MountUnavailable: neither a plain mount namespace nor one inside a user
            namespace can be made here.
    """
    if sys.platform != "linux":
        raise MountUnavailable(
            f"local runners mount volumes with Linux mount namespaces, not on {sys.platform}; "
            "use the docker executor (`remotecell serve --executor docker`)"
        )
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    except OSError as plain:
        uid, gid = os.getuid(), os.getgid()
        try:
            _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER)")
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        except OSError as user:
            raise MountUnavailable(
                f"a local runner cannot mount volumes here ({plain.strerror}; in a user "
                f"namespace: {user.strerror}): {ALTERNATIVE}"
            ) from None
    try:
        _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private")
    except OSError as err:
        raise MountUnavailable(
            f"a local runner cannot mount volumes here ({err.strerror}): {ALTERNATIVE}"
        ) from None


def symlink_problem(path: str) -> str:
    """Why a volume cannot be mounted at ``path`` on this machine because the path goes
    through a symlink ("" when it does not): the mount would land where the link points."""
    real = os.path.realpath(path)
    if real == os.path.normpath(path):
        return ""
    return (
        f"cannot mount a volume at {path}: on this machine that path leads through a "
        f"symlink to {real}; mount the volume at a path with no symlink in it"
    )


def bind(source: str, target: str) -> None:
    """Bind-mounts directory ``source`` at ``target`` (created if missing), in this
    process's namespace (call ``enter_private_namespace`` first).

    Raises:
        MountUnavailable: the mount failed, or ``target`` leads through a symlink (it
            may have become one since the job was checked); the message says why.
    """
    problem = symlink_problem(target)
    if problem:
        raise MountUnavailable(problem)
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as err:
        raise MountUnavailable(
            f"cannot create the mount point {target} for a volume ({err.strerror}); "
            "mount the volume at a path that can be created, such as one under your home"
        ) from None
    result = _libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND | MS_REC, None)
    if result != 0:
        errno = ctypes.get_errno()
        raise MountUnavailable(
            f"cannot mount a volume at {target} ({os.strerror(errno)}): {ALTERNATIVE}"
        )


def probe() -> str:
    """Why local runners cannot mount volumes here ("" when they can), found by trying
    in a child process (this process keeps its mounts)."""
    code = (
        "import sys\n"
        "from remotecell.backend.volumes import namespace as n\n"
        "try:\n"
        "    n.enter_private_namespace()\n"
        "    n.bind(sys.argv[1] + '/a', sys.argv[1] + '/b')\n"
        "except OSError as err:\n"
        "    print(err, end=''); sys.exit(1)\n"
    )
    with tempfile.TemporaryDirectory(prefix="remotecell-mount-probe-") as scratch:
        os.mkdir(os.path.join(scratch, "a"))
        try:
            done = subprocess.run(
                [sys.executable, "-c", code, scratch],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as err:
            return f"could not check whether local runners can mount volumes ({err}): {ALTERNATIVE}"
    if done.returncode == 0:
        return ""
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]
