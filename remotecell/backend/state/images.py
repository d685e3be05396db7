"""Which images have been built, in the control plane's SQLite file (table ``images``).

One row per (image id, builder): the same image built as a venv and as a docker image are
two builds. A row is ``building`` while a build runs, ``ready`` with the built image once it
succeeded, ``failed`` with the error once it failed (a failed build is not a cache hit: the
next request builds again). The build logs are files next to it (``ImageCache``).

Its own connection; the table is declared in ``schema``. The CLI reads and prunes it
through the control plane (``images.service``), never opening the file itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from remotecell.backend.images.builder import BuiltImage
from remotecell.backend.state.schema import open_database

BUILDING = "building"
READY = "ready"
FAILED = "failed"


@dataclass(frozen=True)
class ImageRecord:
    id: str
    builder: str
    state: str
    built: BuiltImage | None
    error: str
    created: float
    finished: float
    last_used: float
    size: int


class ImageStore:
    """The ``images`` table of ``state.sqlite3``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(path)
        #: Claims this store made or saw: a job's submit claims its image, and a warm
        #: cell's need not write the same row again.
        self._claimed: set[tuple[str, str]] = set()

    def close(self) -> None:
        self._db.close()

    def get(self, image_id: str, builder: str) -> ImageRecord | None:
        row = self._db.execute(
            "SELECT * FROM images WHERE id = ? AND builder = ?", (image_id, builder)
        ).fetchone()
        return _record(row) if row else None

    def find(self, prefix: str) -> list[ImageRecord]:
        """The images whose id starts with ``prefix`` (``ls`` shows 12 characters)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._db.execute(
            "SELECT * FROM images WHERE id LIKE ? ESCAPE '\\' ORDER BY created", (escaped + "%",)
        ).fetchall()
        return [_record(r) for r in rows]

    # -- whose images they are: a user's are those their jobs used ---------------------

    def claim(self, image_id: str, user: str) -> None:
        if (image_id, user) in self._claimed:
            return
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO image_users (image_id, user) VALUES (?, ?)", (image_id, user)
            )
        self._claimed.add((image_id, user))

    def unclaim(self, image_id: str, user: str) -> None:
        self._claimed.discard((image_id, user))
        with self._db:
            self._db.execute(
                "DELETE FROM image_users WHERE image_id = ? AND user = ?", (image_id, user)
            )

    def users_of(self, image_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT user FROM image_users WHERE image_id = ? ORDER BY user", (image_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def images_of(self, user: str) -> set[str]:
        rows = self._db.execute(
            "SELECT image_id FROM image_users WHERE user = ?", (user,)
        ).fetchall()
        return {r[0] for r in rows}

    def all(self) -> list[ImageRecord]:
        rows = self._db.execute("SELECT * FROM images ORDER BY created DESC").fetchall()
        return [_record(r) for r in rows]

    def building(self, image_id: str, builder: str) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO images (id, builder, state, created) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id, builder) DO UPDATE SET state = excluded.state,"
            " built = '', error = '', created = excluded.created, finished = 0, size = 0",
            (image_id, builder, BUILDING, now),
        )

    def ready(self, built: BuiltImage) -> None:
        now = time.time()
        self._db.execute(
            "UPDATE images SET state = ?, built = ?, finished = ?, last_used = ?, size = ?"
            " WHERE id = ? AND builder = ?",
            (READY, built.to_json(), now, now, built.size_bytes, built.image_id, built.builder),
        )

    def failed(self, image_id: str, builder: str, error: str) -> None:
        self._db.execute(
            "UPDATE images SET state = ?, error = ?, finished = ? WHERE id = ? AND builder = ?",
            (FAILED, error, time.time(), image_id, builder),
        )

    def used(self, image_id: str, builder: str, when: float | None = None) -> None:
        self._db.execute(
            "UPDATE images SET last_used = ? WHERE id = ? AND builder = ?",
            (time.time() if when is None else when, image_id, builder),
        )

    def interrupted(self) -> int:
        """Marks builds a previous control plane left running as failed; returns how many."""
        cur = self._db.execute(
            "UPDATE images SET state = ?, error = ?, finished = ? WHERE state = ?",
            (
                FAILED,
                "interrupted: the control plane stopped during the build",
                time.time(),
                BUILDING,
            ),
        )
        return cur.rowcount

    def delete(self, image_id: str, builder: str) -> None:
        self._db.execute("DELETE FROM images WHERE id = ? AND builder = ?", (image_id, builder))


def _record(row: tuple) -> ImageRecord:
    image_id, builder, state, built, error, created, finished, last_used, size = row
    return ImageRecord(
        id=image_id,
        builder=builder,
        state=state,
        built=BuiltImage.from_json(built) if built else None,
        error=error,
        created=created,
        finished=finished,
        last_used=last_used,
        size=size,
    )
