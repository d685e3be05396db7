"""The state database's schema, all of it, and the one place ``state.sqlite3`` is opened.

Each store (jobs, images, volumes, secrets) opens its own connection (WAL: tests and
tools may read while a control plane runs). Whichever opens a database first brings the
whole schema up to date, so every store finds every table whatever opened the file
before it.

``PRAGMA user_version`` is the schema's version. Databases made before it was recorded
read 0 and may hold any subset of the tables (each store used to create its own), so
bringing one up to date only creates what is missing and adds the columns ``jobs`` lacks.
A database at the current version is opened without touching its schema. A later change
that is not "create if missing" goes in ``_migrate`` under a new version number.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: The version ``_migrate`` brings a database to.
SCHEMA_VERSION = 3

#: Every table, by name: what a database has once it is open.
TABLES: dict[str, str] = {
    "jobs": """
CREATE TABLE IF NOT EXISTS jobs (
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
)""",
    # A running job's telemetry, downsampled (see backend/telemetry/downsample.py).
    "metrics": """
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL,
    time   REAL NOT NULL,
    body   BLOB NOT NULL,
    PRIMARY KEY (job_id, time)
) WITHOUT ROWID""",
    "events": """
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    body   BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID""",
    # One row per (image id, builder): the same image as a venv and as a docker image are
    # two builds (state/images.py).
    "images": """
CREATE TABLE IF NOT EXISTS images (
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
) WITHOUT ROWID""",
    "volumes": """
CREATE TABLE IF NOT EXISTS volumes (
    name      TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    created   REAL NOT NULL,
    url       TEXT NOT NULL
) WITHOUT ROWID""",
    # Names and keys in clear, the values as one Fernet token (secrets/store.py).
    "secrets": """
CREATE TABLE IF NOT EXISTS secrets (
    name    TEXT PRIMARY KEY,
    keys    TEXT NOT NULL,
    token   BLOB NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID""",
    # Who may call (state/credentials.py): users, and the SHA-256 of each token, a
    # user's or a runner's (runner_id set: it acts as that runner only).
    "users": """
CREATE TABLE IF NOT EXISTS users (
    name    TEXT PRIMARY KEY,
    admin   INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
) WITHOUT ROWID""",
    # Which users' jobs used which images: a user lists and removes their own images.
    "image_users": """
CREATE TABLE IF NOT EXISTS image_users (
    image_id TEXT NOT NULL,
    user     TEXT NOT NULL,
    PRIMARY KEY (image_id, user)
) WITHOUT ROWID""",
    # Secrets and volumes an owner shares with another user, by name (state/owned.py).
    "shares": """
CREATE TABLE IF NOT EXISTS shares (
    kind    TEXT NOT NULL,
    owner   TEXT NOT NULL,
    name    TEXT NOT NULL,
    grantee TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (kind, owner, name, grantee)
) WITHOUT ROWID""",
    "credentials": """
CREATE TABLE IF NOT EXISTS credentials (
    hash      TEXT PRIMARY KEY,
    user      TEXT NOT NULL,
    runner_id TEXT NOT NULL DEFAULT '',
    volumes   TEXT NOT NULL DEFAULT '',
    created   REAL NOT NULL
) WITHOUT ROWID""",
    # Deployments (version 3): one row per name, the version it serves and its settings
    # (a pb.DeploymentSettings); each version's spec in `deployment_versions`.
    "deployments": """
CREATE TABLE IF NOT EXISTS deployments (
    name      TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    version   INTEGER NOT NULL,
    settings  BLOB NOT NULL,
    stopped   INTEGER NOT NULL DEFAULT 0,
    ephemeral INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL
) WITHOUT ROWID""",
    "deployment_versions": """
CREATE TABLE IF NOT EXISTS deployment_versions (
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    spec     BLOB NOT NULL,
    created  REAL NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID""",
}

_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state)",
    "CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created)",
)

#: Columns added to a table after its first release, with their definitions: a database
#: made by an older control plane gets them when it is opened.
ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "jobs": {
        "gpu_type": "TEXT NOT NULL DEFAULT ''",
        "gpu_count": "INTEGER NOT NULL DEFAULT 0",
        "price": "REAL",  # per second; NULL: unknown
        "gpu_uuids": "TEXT NOT NULL DEFAULT ''",  # comma-separated: the GPUs its runner holds
        "owner": "TEXT NOT NULL DEFAULT ''",  # the user who submitted it (version 2)
    },
}


def open_database(path: Path) -> sqlite3.Connection:
    """A connection to the state database at ``path`` (WAL, in autocommit mode), created
    or brought up to date first if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        if _version(db) < SCHEMA_VERSION:
            _migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _migrate(db: sqlite3.Connection) -> None:
    # One writer at a time: two processes opening an old database at once must not both
    # add the same column.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db)
        if version < SCHEMA_VERSION:
            # Versions 1 to 3 only added tables, columns and indexes: whatever is missing
            # is made, whichever version the database is at.
            for statement in TABLES.values():
                db.execute(statement)
            for table, columns in ADDED_COLUMNS.items():
                present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, definition in columns.items():
                    if name not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
            for statement in _INDEXES:
                db.execute(statement)
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
