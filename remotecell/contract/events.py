"""A job's events: the bodies an event carries, which event ends a job, and which ones
are telemetry samples outside the job's numbered log.

Every layer a job's events pass through (the runner, the control plane's job log, the
client's stream, the notebook's follower) asks these questions here, of a typed body or
a ``pb.JobEvent``, instead of looking for a field name in a dict of its own.
"""

from __future__ import annotations

import time as _time
from typing import TypeAlias

from remotecell._proto import pb

#: What a ``pb.JobEvent`` carries: one of the messages of its ``body`` oneof.
Body: TypeAlias = (
    pb.Accepted
    | pb.Status
    | pb.Stream
    | pb.Display
    | pb.Result
    | pb.Error
    | pb.Finished
    | pb.Build
    | pb.Metrics
    | pb.InputRequest
    | pb.CommMessage
)

#: The oneof field of each body message, by the message's full name.
_FIELD = {
    f.message_type.full_name: f.name
    for f in pb.JobEvent.DESCRIPTOR.oneofs_by_name["body"].fields
    if f.message_type is not None
}


def job_event(job_id: str, body: Body, seq: int = 0, at: float | None = None) -> pb.JobEvent:
    """The event ``seq`` of job ``job_id`` carrying ``body``, at ``at`` (default: now)."""
    event = pb.JobEvent(job_id=job_id, seq=seq, time=_time.time() if at is None else at)
    getattr(event, _FIELD[body.DESCRIPTOR.full_name]).CopyFrom(body)
    return event


def body(event: pb.JobEvent) -> Body | None:
    """The message ``event`` carries (None for an empty event)."""
    field = event.WhichOneof("body")
    return getattr(event, field) if field is not None else None  # type: ignore[no-any-return]


def is_end(event: pb.JobEvent) -> bool:
    """Whether ``event`` is the job's last: its ``finished`` event."""
    return event.HasField("finished")


def is_sample(event: pb.JobEvent) -> bool:
    """Whether ``event`` is a telemetry reading: unnumbered (seq 0), sent live to followers
    and stored apart, downsampled."""
    return event.HasField("metrics")
