"""Stored deployments: each name's owner, current version and settings, and every
version's spec (``state/schema.py`` has the tables). A deployment is in SQLite before
its deploy is answered, so it survives a control-plane restart; an ephemeral one (a
notebook function's) is forgotten at the next start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from remotecell._proto import pb
from remotecell.backend.state.schema import open_database


@dataclass
class DeploymentRow:
    name: str
    owner: str
    version: int
    settings: pb.DeploymentSettings
    stopped: bool
    ephemeral: bool
    created: float


class DeploymentStore:
    """Used from the control plane's event loop thread only."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path)

    def close(self) -> None:
        self._db.close()

    def get(self, name: str) -> DeploymentRow | None:
        row = self._db.execute(
            "SELECT name, owner, version, settings, stopped, ephemeral, created "
            "FROM deployments WHERE name = ?",
            (name,),
        ).fetchone()
        return _row(row) if row is not None else None

    def all(self) -> list[DeploymentRow]:
        rows = self._db.execute(
            "SELECT name, owner, version, settings, stopped, ephemeral, created "
            "FROM deployments ORDER BY name"
        )
        return [_row(r) for r in rows]

    def add_version(
        self,
        name: str,
        owner: str,
        spec: pb.JobSpec,
        settings: pb.DeploymentSettings,
        ephemeral: bool,
    ) -> int:
        """Stores ``spec`` as the name's next version and makes it current; returns the
        version's number (1 for a new deployment)."""
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            last = self._db.execute(
                "SELECT MAX(version) FROM deployment_versions WHERE name = ?", (name,)
            ).fetchone()[0]
            version = int(last or 0) + 1
            spec.serve.version = version
            self._db.execute(
                "INSERT INTO deployment_versions (name, version, spec, created) "
                "VALUES (?, ?, ?, ?)",
                (name, version, spec.SerializeToString(), now),
            )
            self._db.execute(
                "INSERT INTO deployments (name, owner, version, settings, stopped, "
                "ephemeral, created) VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (name) DO "
                "UPDATE SET version = excluded.version, settings = excluded.settings, "
                "stopped = 0, ephemeral = excluded.ephemeral",
                (name, owner, version, settings.SerializeToString(), int(ephemeral), now),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return version

    def spec(self, name: str, version: int) -> pb.JobSpec | None:
        row = self._db.execute(
            "SELECT spec FROM deployment_versions WHERE name = ? AND version = ?",
            (name, version),
        ).fetchone()
        return pb.JobSpec.FromString(row[0]) if row is not None else None

    def versions(self, name: str) -> list[int]:
        rows = self._db.execute(
            "SELECT version FROM deployment_versions WHERE name = ? ORDER BY version", (name,)
        )
        return [int(r[0]) for r in rows]

    def update(
        self,
        name: str,
        *,
        version: int | None = None,
        settings: pb.DeploymentSettings | None = None,
        stopped: bool | None = None,
    ) -> None:
        if version is not None:
            self._db.execute("UPDATE deployments SET version = ? WHERE name = ?", (version, name))
        if settings is not None:
            self._db.execute(
                "UPDATE deployments SET settings = ? WHERE name = ?",
                (settings.SerializeToString(), name),
            )
        if stopped is not None:
            self._db.execute(
                "UPDATE deployments SET stopped = ? WHERE name = ?", (int(stopped), name)
            )

    def delete(self, name: str) -> None:
        self._db.execute("DELETE FROM deployment_versions WHERE name = ?", (name,))
        self._db.execute("DELETE FROM deployments WHERE name = ?", (name,))


def _row(row: tuple) -> DeploymentRow:
    name, owner, version, settings, stopped, ephemeral, created = row
    return DeploymentRow(
        name,
        owner,
        int(version),
        pb.DeploymentSettings.FromString(settings),
        bool(stopped),
        bool(ephemeral),
        float(created),
    )
