"""The state database's schema is declared in one module, which every store opens through."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from remotecell._proto import pb
from remotecell.backend.images.builder import BuiltImage
from remotecell.backend.secrets.store import SecretStore
from remotecell.backend.state.images import READY, ImageStore
from remotecell.backend.state.schema import ADDED_COLUMNS, SCHEMA_VERSION, TABLES, open_database
from remotecell.backend.state.store import Store
from remotecell.backend.state.volumes import VolumeRecords

#: ``state.sqlite3`` as the first release of the jobs store made it: no version, no
#: image, volume or secret tables, and ``jobs`` without the columns added since.
OLD_LAYOUT = """
CREATE TABLE jobs (
    id        TEXT PRIMARY KEY,
    state     INTEGER NOT NULL,
    spec      BLOB NOT NULL,
    created   REAL NOT NULL,
    started   REAL NOT NULL DEFAULT 0,
    finished  REAL NOT NULL DEFAULT 0,
    attempt   INTEGER NOT NULL DEFAULT 0,
    runner_id TEXT NOT NULL DEFAULT '',
    session   TEXT NOT NULL DEFAULT '',
    summary   TEXT NOT NULL DEFAULT '',
    message   TEXT NOT NULL DEFAULT '',
    origin    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX jobs_by_state ON jobs (state);
CREATE TABLE events (
    job_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    body   BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE images (
    id        TEXT NOT NULL,
    builder   TEXT NOT NULL,
    state     TEXT NOT NULL,
    built     TEXT NOT NULL DEFAULT '',
    error     TEXT NOT NULL DEFAULT '',
    created   REAL NOT NULL,
    finished  REAL NOT NULL DEFAULT 0,
    last_used REAL NOT NULL DEFAULT 0,
    size      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (id, builder)
) WITHOUT ROWID;
"""


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def use_every_store(path: Path) -> None:
    """A write and a read in every table the stores use: a missing table or column fails."""
    jobs = Store(path)
    accepted = pb.JobEvent(job_id="j-new", seq=0, time=1.0)
    jobs.create_job("j-new", pb.JobSpec(code="print(1)"), accepted)
    jobs.update_job("j-new", gpu_type="H100", gpu_count=1, price=0.001, gpu_uuids="GPU-1")
    jobs.add_metrics("j-new", 2.0, pb.Metrics())
    assert [e.seq for e in jobs.events("j-new")] == [0] and len(jobs.metrics("j-new")) == 1
    row = jobs.get_job("j-new")
    assert row is not None and row.gpu_type == "H100"
    jobs.close()
    images = ImageStore(path)
    images.building("i-1", "venv")
    images.ready(BuiltImage(image_id="i-1", builder="venv", python="/bin/python"))
    record = images.get("i-1", "venv")
    assert record is not None and record.state == READY
    images.close()
    volumes = VolumeRecords(path)
    assert volumes.add("weights", "v-1", "/data/v-1")[1]
    volumes.close()
    secrets = SecretStore(path)
    secrets.create("hf", {"HF_TOKEN": "hf_abcdefgh"})
    assert secrets.values("hf") == {"HF_TOKEN": "hf_abcdefgh"}
    secrets.close()


def test_a_new_database_has_every_table_the_stores_use(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    open_database(path).close()
    assert tables(path) == set(TABLES)
    assert version(path) == SCHEMA_VERSION
    for table, added in ADDED_COLUMNS.items():
        assert set(added) <= columns(path, table)
    use_every_store(path)


def test_any_store_opening_a_database_first_makes_all_of_it(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    VolumeRecords(path).close()
    assert tables(path) == set(TABLES)
    use_every_store(path)


def test_an_old_layout_database_opens_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_LAYOUT)
        event = pb.JobEvent(job_id="j-old", seq=0, time=1.0)
        db.execute(
            "INSERT INTO jobs (id, state, spec, created) VALUES (?, ?, ?, ?)",
            ("j-old", pb.SUCCEEDED, pb.JobSpec(code="x = 1").SerializeToString(), 1.0),
        )
        db.execute(
            "INSERT INTO events (job_id, seq, body) VALUES (?, ?, ?)",
            ("j-old", 0, event.SerializeToString()),
        )
    assert version(path) == 0

    store = Store(path)
    old = store.get_job("j-old")
    assert old is not None and old.state == pb.SUCCEEDED and old.spec.code == "x = 1"
    assert old.gpu_type == "" and old.gpu_count == 0 and old.price is None
    assert [e.job_id for e in store.events("j-old")] == ["j-old"]
    store.close()
    assert tables(path) == set(TABLES)
    assert set(ADDED_COLUMNS["jobs"]) <= columns(path, "jobs")
    assert version(path) == SCHEMA_VERSION
    use_every_store(path)


def test_processes_opening_an_old_database_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_LAYOUT)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            open_database(path).close()
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(ADDED_COLUMNS["jobs"]) <= columns(path, "jobs")


def test_a_database_of_a_newer_schema_keeps_its_version(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    open_database(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    use_every_store(path)
    assert version(path) == SCHEMA_VERSION + 1
