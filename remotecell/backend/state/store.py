"""The control plane's durable state: jobs and their events, in SQLite (WAL).

Every write commits before the caller acknowledges anything to a client or runner, so
a job that was accepted, and every event a client saw, survive a crash of the control
plane. WAL with ``synchronous=NORMAL`` is durable against a process crash (the case we
guard against); only a power loss can drop the last transactions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from remotecell._proto import pb
from remotecell.backend.state.schema import open_database

ACTIVE_STATES = (pb.QUEUED, pb.RUNNING)

_JOB_COLUMNS = (
    "id, state, spec, created, started, finished, attempt, runner_id, session, summary,"
    " message, origin, gpu_type, gpu_count, price, gpu_uuids, owner"
)


@dataclass
class JobRow:
    id: str
    state: int
    spec: pb.JobSpec
    created: float
    started: float
    finished: float
    attempt: int
    runner_id: str
    session: str
    summary: str
    message: str
    origin: str
    gpu_type: str = ""
    gpu_count: int = 0
    price: float | None = None
    gpu_uuids: tuple[str, ...] = ()
    #: The user who submitted it ('' for a job from before users existed).
    owner: str = ""

    def info(self, events: int = 0) -> pb.JobInfo:
        gpu_type, gpu_count = self.gpu_type, self.gpu_count
        if not gpu_type and self.spec.resources.gpu:  # not started: what it asks for first
            gpu_type = self.spec.resources.gpu[0].type
            gpu_count = self.spec.resources.gpu[0].count
        return pb.JobInfo(
            job_id=self.id,
            state=self.state,  # type: ignore[arg-type]
            created=self.created,
            started=self.started,
            finished=self.finished,
            summary=self.summary,
            runner_id=self.runner_id,
            attempt=self.attempt,
            session=self.session,
            message=self.message,
            events=events,
            origin=self.origin,
            gpu_type=gpu_type,
            gpu_count=gpu_count,
            price_per_second=self.price,
        )


def summary_of(code: str) -> str:
    for line in code.splitlines():
        if line.strip():
            return line.strip()[:120]
    return ""


class Store:
    """SQLite-backed jobs and events. Used from the control plane's event loop thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(path)

    def close(self) -> None:
        self._db.close()

    # -- jobs -----------------------------------------------------------------

    def create_job(
        self, job_id: str, spec: pb.JobSpec, accepted: pb.JobEvent, owner: str = ""
    ) -> None:
        """Stores a new job of ``owner`` and its first event in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO jobs (id, state, spec, created, session, summary, origin, owner)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    pb.QUEUED,
                    spec.SerializeToString(),
                    accepted.time,
                    spec.session,
                    summary_of(spec.code),
                    spec.origin,
                    owner,
                ),
            )
            self._insert_event(accepted)

    def update_job(self, job_id: str, event: pb.JobEvent | None = None, **fields: object) -> bool:
        """Updates a job's columns and stores ``event`` with them atomically.

        Returns whether the event was new (False when it was stored before).
        """
        with self._db:
            self._db.execute("BEGIN")
            if fields:
                assignments = ", ".join(f"{name} = ?" for name in fields)
                self._db.execute(
                    f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id)
                )
            return self._insert_event(event) if event is not None else False

    def get_job(self, job_id: str) -> JobRow | None:
        row = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return _row(row) if row else None

    def jobs_starting(self, prefix: str, owner: str, limit: int = 6) -> list[str]:
        """The ids of ``owner``'s jobs that start with ``prefix`` (at most ``limit``)."""
        rows = self._db.execute(
            "SELECT id FROM jobs WHERE substr(id, 1, ?) = ? AND owner = ? ORDER BY id LIMIT ?",
            (len(prefix), prefix, owner, limit),
        ).fetchall()
        return [row[0] for row in rows]

    def list_jobs(self, limit: int = 50, owner: str | None = None) -> list[JobRow]:
        """The newest jobs, of ``owner`` only unless it is None."""
        if owner is None:
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? ORDER BY created DESC LIMIT ?",
                (owner, limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def active_jobs(self) -> list[JobRow]:
        rows = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY created", ACTIVE_STATES
        ).fetchall()
        return [_row(r) for r in rows]

    # -- events ---------------------------------------------------------------

    def add_event(self, event: pb.JobEvent) -> bool:
        """Stores an event; False when an event with its sequence number was already stored."""
        with self._db:
            return self._insert_event(event)

    def _insert_event(self, event: pb.JobEvent) -> bool:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO events (job_id, seq, body) VALUES (?, ?, ?)",
            (event.job_id, event.seq, event.SerializeToString()),
        )
        return cur.rowcount == 1

    def events(self, job_id: str, from_seq: int = 0) -> Iterator[pb.JobEvent]:
        cur = self._db.execute(
            "SELECT body FROM events WHERE job_id = ? AND seq >= ? ORDER BY seq",
            (job_id, from_seq),
        )
        for (body,) in cur.fetchall():
            yield pb.JobEvent.FromString(body)

    def has_events_from(self, job_id: str, seq: int) -> bool:
        """Whether an event numbered ``seq`` or later is stored (without reading them)."""
        row = self._db.execute(
            "SELECT 1 FROM events WHERE job_id = ? AND seq >= ? LIMIT 1", (job_id, seq)
        ).fetchone()
        return row is not None

    def next_seq(self, job_id: str) -> int:
        (top,) = self._db.execute(
            "SELECT MAX(seq) FROM events WHERE job_id = ?", (job_id,)
        ).fetchone()
        return 0 if top is None else top + 1

    # -- metrics --------------------------------------------------------------

    def add_metrics(self, job_id: str, time: float, metrics: pb.Metrics) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO metrics (job_id, time, body) VALUES (?, ?, ?)",
                (job_id, time, metrics.SerializeToString()),
            )

    def metrics(self, job_id: str) -> list[tuple[float, pb.Metrics]]:
        """A job's stored telemetry samples, oldest first."""
        rows = self._db.execute(
            "SELECT time, body FROM metrics WHERE job_id = ? ORDER BY time", (job_id,)
        ).fetchall()
        return [(t, pb.Metrics.FromString(body)) for t, body in rows]

    def count_events(self, job_id: str) -> int:
        (n,) = self._db.execute(
            "SELECT COUNT(*) FROM events WHERE job_id = ?", (job_id,)
        ).fetchone()
        return int(n)


def _row(row: tuple) -> JobRow:
    (
        job_id,
        state,
        spec,
        created,
        started,
        finished,
        attempt,
        runner_id,
        session,
        summary,
        message,
        origin,
        gpu_type,
        gpu_count,
        price,
        gpu_uuids,
        owner,
    ) = row
    return JobRow(
        id=job_id,
        state=state,
        spec=pb.JobSpec.FromString(spec),
        created=created,
        started=started,
        finished=finished,
        attempt=attempt,
        runner_id=runner_id,
        session=session,
        summary=summary,
        message=message,
        origin=origin,
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        price=price,
        gpu_uuids=tuple(u for u in gpu_uuids.split(",") if u),
        owner=owner,
    )


def now() -> float:
    return time.time()
