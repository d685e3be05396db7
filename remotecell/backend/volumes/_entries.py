"""A volume's file as the wire shows it (``pb.VolumeFile``), from a local directory's
``stat`` or a store's listing, with a version that changes whenever the file does."""

from __future__ import annotations

import contextlib
import datetime
import os
import stat
from typing import Any

import xxhash

from remotecell._proto import pb


def local_entry(rel: str, st: os.stat_result) -> pb.VolumeFile:
    is_dir = stat.S_ISDIR(st.st_mode)
    return pb.VolumeFile(
        path=rel,
        is_dir=is_dir,
        size=0 if is_dir else st.st_size,
        mtime=st.st_mtime,
        version="" if is_dir else f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}",
    )


def store_entry(fs: Any, root: str, info: dict[str, Any]) -> pb.VolumeFile:
    """A store entry, with a version derived from everything the store says of it
    (size, times, ETag, ...): an object store's listing changes whenever the object does."""
    name = fs._strip_protocol(info["name"]).rstrip("/")
    rel = name[len(root) :].lstrip("/") if name.startswith(root) else ""
    is_dir = info.get("type") == "directory"
    mtime = 0.0
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = _seconds(info.get(key))
        if value:
            mtime = value
            break
    version = ""
    if not is_dir:
        described = sorted(
            (k, str(_seconds(v) if isinstance(v, datetime.datetime) else v))
            for k, v in info.items()
            if k != "name"
        )
        version = xxhash.xxh3_64_hexdigest(repr(described).encode())
    return pb.VolumeFile(
        path=rel,
        is_dir=is_dir,
        size=0 if is_dir else int(info.get("size") or 0),
        mtime=mtime,
        version=version,
    )


def _seconds(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.datetime.fromisoformat(value).timestamp()
    return 0.0
