"""Which volumes exist, in the control plane's SQLite file (table ``volumes``).

One row per volume: its name (``OWNER/NAME``: ``state/owned.py``), a random id (so that a volume deleted and made again under
the same name is a different volume to runners that still hold the old one), when it was
made, and the URL of its root in the volume store. The files are in the store, never here.

Its own connection, like the image records; the table is declared in ``schema``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from remotecell.backend.state.owned import VOLUME, Shares
from remotecell.backend.state.schema import open_database


@dataclass(frozen=True)
class VolumeRecord:
    name: str  # as stored: OWNER/NAME (a bare name outside a control plane)
    volume_id: str
    created: float
    url: str  # the root of its files: a local directory or an fsspec URL


class VolumeRecords:
    """The ``volumes`` table of ``state.sqlite3``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(path)
        self.shares = Shares(self._db)

    def close(self) -> None:
        self._db.close()

    def get(self, name: str) -> VolumeRecord | None:
        row = self._db.execute(
            "SELECT name, volume_id, created, url FROM volumes WHERE name = ?", (name,)
        ).fetchone()
        return VolumeRecord(*row) if row else None

    def all(self, owner: str = "") -> list[VolumeRecord]:
        """Every volume; with ``owner``, theirs and those shared with them."""
        rows = self.shares.visible("volumes", "name, volume_id, created, url", VOLUME, owner)
        return [VolumeRecord(*row) for row in rows]

    def add(self, name: str, volume_id: str, url: str) -> tuple[VolumeRecord, bool]:
        """Adds a volume unless one of that name exists; returns the stored record and
        whether it is new."""
        with self._db:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO volumes (name, volume_id, created, url) VALUES (?, ?, ?, ?)",
                (name, volume_id, time.time(), url),
            )
        record = self.get(name)
        assert record is not None
        return record, cur.rowcount == 1

    def remove(self, name: str) -> bool:
        with self._db:
            cur = self._db.execute("DELETE FROM volumes WHERE name = ?", (name,))
        return cur.rowcount == 1
