"""Checks for volume names, paths inside a volume, and mount paths; how a missing
volume or file is told apart on the wire.

The notebook, the CLI, the control plane and the runner all apply the same rules, so a
bad name or path is refused where it is first seen, with the same sentence.

* A volume name is 1-64 letters, digits, ``_``, ``.`` or ``-``, starting with a letter
  or digit (it is a directory or key prefix in the store).
* A path inside a volume is "/"-separated and relative to the volume's root; a leading
  "/" means the root (``"/llama/config.json"`` and ``"llama/config.json"`` are the same
  file). ``.`` parts are dropped; a ``..`` part, a NUL, or a backslash is refused.
* A mount path is absolute, is not ``/`` or a system directory a runner needs, and no
  two mounts of one cell nest or coincide.
* A mount is a :class:`Mount` from the magic's ``volumes=`` to the runner: turned into
  the wire's ``VolumeMount`` and back only by its ``to_proto``/``from_proto``, and checked
  by :func:`check_mounts` in the kernel and again in the control plane.
* A volume RPC's NOT_FOUND carries ``MISSING_KEY`` in its trailing metadata, set to
  ``"volume"`` or ``"file"``, so the client raises the right error.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError

#: Trailing metadata of a volume RPC's NOT_FOUND: "volume" or "file".
MISSING_KEY = "remotecell-missing"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Directories a runner (or the OS under it) needs as they are: a volume may not be
#: mounted on them, on a directory inside them, or on one that holds them.
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
)

#: The most volumes one cell mounts, and the longest path (in or of a volume).
MAX_MOUNTS = 64
MAX_PATH_CHARS = 4096

VALID_NAME = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"


def check_name(name: object) -> str:
    """Returns ``name`` if it is a valid volume name.

    Raises:
        ConfigError: it is not; the message says what a valid name is.
    """
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ConfigError(
            f"{_shown(name)} is not a valid volume name: use {VALID_NAME}, for example 'weights'"
        )
    return name


def volume_path(path: object, volume: str = "") -> str:
    """A path inside a volume, normalised: relative, "/"-separated, no "." parts
    (``""`` is the root).

    Raises:
        ConfigError: the path leaves the volume (``..``) or is not a path at all.
    """
    where = f" in volume {volume!r}" if volume else ""
    if not isinstance(path, str):
        raise ConfigError(
            f"a path{where} must be a string such as '/models/config.json', "
            f"not {type(path).__name__}"
        )
    if "\0" in path or "\\" in path or len(path) > MAX_PATH_CHARS:
        raise ConfigError(
            f"{_shown(path)} is not a valid path{where}: it holds a NUL or a backslash, or is "
            f"over {MAX_PATH_CHARS} characters; use '/'-separated names"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(
            f"{_shown(path)} is not a valid path{where}: '..' would leave the volume; "
            "give a path from the volume's root, such as '/models/config.json'"
        )
    return "/".join(parts)


def mount_path(path: object, reserved: Iterable[str] = ()) -> str:
    """A mount path, normalised (``"/models/"`` -> ``"/models"``).

    Args:
        reserved: more directories the runner needs (the control plane's data
            directory, the runner's Python); refused like ``SYSTEM_DIRS``, and so are
            the directories above them.

    Raises:
        ConfigError: not absolute, ``/``, ``..``, or where a runner needs its own files.
    """
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise ConfigError(
            f"volume mount path {_shown(path)} is not an absolute path: give one such as '/models'"
        )
    if len(path) > MAX_PATH_CHARS:
        raise ConfigError(
            f"volume mount path {_shown(path)} is over {MAX_PATH_CHARS} characters: "
            "give a shorter one such as '/models'"
        )
    if ".." in path.split("/"):
        raise ConfigError(
            f"volume mount path {_shown(path)} holds '..': give it without, such as '/models'"
        )
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal == "/":
        raise ConfigError(
            "a volume cannot be mounted at '/': give a directory of its own, such as '/models'"
        )
    for system in SYSTEM_DIRS:
        if _within(normal, system) or _within(system, normal):
            raise ConfigError(
                f"a volume cannot be mounted at {normal!r}: the runner needs {system} as it is; "
                "mount it elsewhere, such as '/models' or '/data'"
            )
    for needed in reserved:
        needed = posixpath.normpath(needed)
        if _within(needed, normal):
            raise ConfigError(
                f"a volume cannot be mounted at {normal!r}: it would hide {needed}, which "
                "the runner needs; mount it elsewhere, such as '/models' or '/data'"
            )
    return normal


@dataclass(frozen=True, order=True)
class Mount:
    """Volume ``name`` mounted at ``path`` in a cell's runner.

    Attributes:
        path: the mount path (normalised once :func:`check_mounts` has checked it).
        name: the volume's name.
        volume_id: the id of the volume the control plane found by that name ("" until
            it has looked): a volume deleted and made again is another volume.
    """

    path: str
    name: str
    volume_id: str = ""

    def to_proto(self) -> pb.VolumeMount:
        return pb.VolumeMount(path=self.path, name=self.name, volume_id=self.volume_id)

    @classmethod
    def from_proto(cls, mount: pb.VolumeMount) -> Mount:
        """The wire's mount as it is, unchecked (:func:`check_mounts` checks)."""
        return cls(mount.path, mount.name, mount.volume_id)


def check_mounts(mounts: Iterable[Mount], reserved: Iterable[str] = ()) -> tuple[Mount, ...]:
    """A cell's mounts, checked and their paths normalised, sorted by path: the one
    check, made by the kernel and again by the control plane.

    Raises:
        ConfigError: a bad path or name, two mounts that nest or coincide, or one
            volume mounted twice.
    """
    reserved = list(reserved)
    seen: dict[str, Mount] = {}
    by_volume: dict[str, str] = {}
    for mount in mounts:
        normal = mount_path(mount.path, reserved)
        name = check_name(mount.name)
        for other in seen:
            if _within(normal, other) or _within(other, normal):
                raise ConfigError(
                    f"volume mount paths {other!r} and {normal!r} collide (one is in the "
                    "other, or they are the same); give each volume a directory of its own"
                )
        if name in by_volume:
            raise ConfigError(
                f"volume {name!r} is mounted twice ({by_volume[name]!r} and {normal!r}); "
                "mount it once"
            )
        seen[normal] = Mount(normal, name, mount.volume_id)
        by_volume[name] = normal
    return tuple(sorted(seen.values()))


def _shown(value: object) -> str:
    """``value`` as a message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _within(path: str, parent: str) -> bool:
    """Whether ``path`` is ``parent`` or inside it."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")
