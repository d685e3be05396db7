"""Volumes and their files as plain-text tables, for the CLI."""

from __future__ import annotations

import time
from collections.abc import Sequence

from remotecell._proto import pb


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def format_volumes(volumes: list[pb.VolumeInfo]) -> str:
    """Name, when it was made, and where its files are."""
    if not volumes:
        return "no volumes (`remotecell volume create NAME` makes one)"
    rows: list[tuple[str, ...]] = [("VOLUME", "CREATED", "MOUNTED AS", "STORE")]
    for v in volumes:
        rows.append(
            (v.name, _when(v.created), "shared dir" if v.shared_dir else "synced copy", v.url)
        )
    return _table(rows)


def format_files(files: list[pb.VolumeFile]) -> str:
    """Type, size, modified time and path of each entry."""
    if not files:
        return "(empty)"
    rows: list[tuple[str, ...]] = [("TYPE", "SIZE", "MODIFIED", "PATH")]
    for f in files:
        rows.append(
            (
                "dir" if f.is_dir else "file",
                "-" if f.is_dir else _size(f.size),
                _when(f.mtime),
                f.path + ("/" if f.is_dir else ""),
            )
        )
    return _table(rows)
