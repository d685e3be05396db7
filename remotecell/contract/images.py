"""How an image is named, and how local files become the bytes it adds.

* An image's id (``spec_id``) is the hash of a canonical form of its spec; the notebook
  sets it and the control plane checks it before it trusts a cached build.
* A local directory or file travels as a ``deterministic_tar``: the same tree gives the
  same bytes, so the same blob hash and the same image id, on any machine.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError
from remotecell.contract.values import content_hash

__all__ = ["deterministic_tar", "spec_id"]

#: Bumped when the canonical form below changes, so old ids never collide with new ones.
_ID_FORMAT = "remotecell-image-v1"


def spec_id(spec: pb.ImageSpec) -> str:
    """An image's id: the hash of a canonical JSON form of its base and steps.

    Local files count by their blob hashes, so the id covers their content. ``force_build``
    and the ``id`` field itself do not count.
    """
    canonical = [
        _ID_FORMAT,
        int(spec.base),
        spec.python,
        spec.base_ref,
        spec.dockerfile,
        [
            [
                int(step.kind),
                list(step.args),
                sorted(step.options.items()),
                sorted(step.env.items()),
                step.blob,
                step.dest,
            ]
            for step in spec.steps
        ],
    ]
    return content_hash(json.dumps(canonical, separators=(",", ":")).encode())


def deterministic_tar(path: Path, arcname: str, ignore: Iterable[str] = ()) -> bytes:
    """A tar of ``path`` (a file or directory) under ``arcname`` whose bytes depend only on
    the names, content, modes and links inside: same tree, same hash.

    Owners and times are zeroed; entries are sorted. ``ignore`` as in ``Image.add_local_dir``.
    """
    patterns = tuple(ignore)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if path.is_dir() and not path.is_symlink():
            _add_tree(tar, path, PurePosixPath(), arcname, patterns)
        else:
            _add_entry(tar, path, arcname)
    return buffer.getvalue()


def _ignored(relative: PurePosixPath, patterns: tuple[str, ...]) -> bool:
    text = str(relative)
    return any(
        fnmatch.fnmatchcase(text, pattern)
        or any(fnmatch.fnmatchcase(p, pattern) for p in relative.parts)
        for pattern in patterns
    )


def _add_tree(
    tar: tarfile.TarFile,
    root: Path,
    relative: PurePosixPath,
    arcname: str,
    patterns: tuple[str, ...],
) -> None:
    directory = root / relative
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        raise ConfigError(f"cannot read local directory {directory}: {err.strerror}") from None
    if str(relative) != "." or arcname != ".":
        _add_entry(tar, directory, str(PurePosixPath(arcname) / relative))
    for name in names:
        child = relative / name
        if _ignored(child, patterns):
            continue
        full = root / child
        if full.is_dir() and not full.is_symlink():
            _add_tree(tar, root, child, arcname, patterns)
        else:
            _add_entry(tar, full, str(PurePosixPath(arcname) / child))


def _add_entry(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    info = tar.gettarinfo(str(path), arcname=arcname)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isfile():
        info.mode = 0o755 if info.mode & 0o111 else 0o644
    elif info.isdir():
        info.mode = 0o755
    if info.isfile():
        with path.open("rb") as f:
            tar.addfile(info, f)
    elif info.isdir() or info.issym():
        tar.addfile(info)
    # sockets, fifos and devices are left out: they cannot be copied
