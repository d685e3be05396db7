"""A job's event log: numbered events stored before anyone sees them, then fanned out.

Sequence numbers: the control plane numbers a job's events until it hands the job to a
runner; from then until the runner's ``finished`` event (or its death) the runner numbers
them, starting at ``Task.first_seq``. So no two writers ever share a job's numbers, and a
runner can resend its events after a reconnect with no duplicates (the store ignores a
sequence number it already has).

Telemetry readings are not numbered (seq 0): they reach followers live and are stored
downsampled, one aggregate per interval (``telemetry/downsample.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from remotecell._proto import pb
from remotecell.backend.state.store import Store
from remotecell.backend.telemetry.downsample import DEFAULT_INTERVAL, Downsampler
from remotecell.contract.events import Body, is_end, is_sample, job_event

#: Stored events replayed per message.
REPLAY_BATCH = 256


class JobNotFound(LookupError):
    pass


@dataclass
class Feed:
    """The live side of one active job's log."""

    job_id: str
    next_seq: int
    subscribers: set[asyncio.Queue[pb.JobEvent]] = field(default_factory=set)
    samples: Downsampler = field(default_factory=Downsampler)
    #: The newest telemetry reading (for /metrics); None between attempts.
    last_metrics: pb.JobEvent | None = None


class JobLog:
    """Stores a job's events and hands them to the clients that follow it."""

    def __init__(self, store: Store, metrics_interval: float = DEFAULT_INTERVAL) -> None:
        self.store = store
        self.metrics_interval = metrics_interval
        self._feeds: dict[str, Feed] = {}

    def open(self, job_id: str, next_seq: int) -> Feed:
        feed = Feed(job_id, next_seq, samples=Downsampler(self.metrics_interval))
        self._feeds[job_id] = feed
        return feed

    def close(self, feed: Feed) -> None:
        """The job ended: its ``finished`` event is stored, and followers read the rest there."""
        self._feeds.pop(feed.job_id, None)

    # -- writing ----------------------------------------------------------------------

    def emit(
        self, feed: Feed, fields: dict[str, object] | None = None, *, body: Body
    ) -> pb.JobEvent:
        """A control-plane event carrying ``body``: numbered, stored with the job's
        ``fields`` (its columns), published."""
        event = job_event(feed.job_id, body, feed.next_seq)
        feed.next_seq += 1
        self.store.update_job(feed.job_id, event, **(fields or {}))
        self._publish(feed, event)
        return event

    def record(self, feed: Feed, event: pb.JobEvent) -> None:
        """A runner's numbered event (a replayed one is stored and published once)."""
        if self.store.add_event(event):
            feed.next_seq = max(feed.next_seq, event.seq + 1)
            self._publish(feed, event)

    def finish(self, feed: Feed, event: pb.JobEvent) -> None:
        """The runner's own ``finished`` event ends the job."""
        feed.next_seq = event.seq + 1
        state = event.finished.state
        message = event.finished.message
        self.store.update_job(feed.job_id, event, state=state, finished=event.time, message=message)
        self._publish(feed, event)

    # -- the control plane's own events ---------------------------------------------------

    def running(
        self,
        feed: Feed,
        attempt: int,
        runner_id: str,
        gpu_type: str,
        gpu_count: int,
        price: float | None,
        gpu_uuids: list[str],
        started: float,
    ) -> None:
        """Attempt ``attempt`` started on ``runner_id`` (its GPUs, at ``price`` a second)."""
        self.emit(
            feed,
            {
                "state": pb.RUNNING,
                "started": started,
                "attempt": attempt,
                "runner_id": runner_id,
                "gpu_type": gpu_type,
                "gpu_count": gpu_count,
                "price": price,
                "gpu_uuids": ",".join(gpu_uuids),
            },
            body=pb.Status(
                state=pb.RUNNING,
                message=f"running on {runner_id}",
                runner_id=runner_id,
                attempt=attempt,
                gpu_type=gpu_type,
                gpu_count=gpu_count,
                price_per_second=price,
            ),
        )

    def waiting(self, feed: Feed, message: str) -> None:
        self.emit(feed, body=pb.Status(state=pb.QUEUED, message=message))

    def retrying(self, feed: Feed, attempt: int, why: str, delay: float, retries: int) -> None:
        """Attempt ``attempt`` failed (``why``); the job is queued again after ``delay``."""
        self.end_samples(feed)
        wait = f" in {delay:g} s" if delay else ""
        self.emit(
            feed,
            {"state": pb.QUEUED, "runner_id": ""},
            body=pb.Status(
                state=pb.QUEUED,
                message=f"attempt {attempt} failed ({why}); retrying{wait} "
                f"(attempt {attempt + 1} of {retries + 1})",
                attempt=attempt,
            ),
        )

    def ended(self, feed: Feed, state: int, message: str, error: pb.Error | None = None) -> None:
        """The job ended here (not by its runner's word): its error, then its end."""
        self.end_samples(feed)
        if error is not None:
            self.emit(feed, body=error)
        self.emit(
            feed,
            {"state": state, "finished": time.time(), "message": message},
            body=pb.Finished(state=state, message=message),  # type: ignore[arg-type]
        )

    def is_stored(self, feed: Feed, event: pb.JobEvent) -> bool:
        """Whether a runner's event with this number is stored already (a replay)."""
        return event.seq < feed.next_seq and self.store.has_events_from(feed.job_id, event.seq)

    # -- telemetry ----------------------------------------------------------------------

    def sample(self, feed: Feed, event: pb.JobEvent) -> None:
        """A telemetry reading: live to followers, downsampled into the store."""
        feed.last_metrics = event
        done = feed.samples.add(event.time, event.metrics)
        if done is not None:
            self.store.add_metrics(feed.job_id, *done)
        self._publish(feed, event)

    def end_samples(self, feed: Feed) -> None:
        """Stores the readings of the interval still open, when an attempt ends."""
        done = feed.samples.flush()
        if done is not None:
            self.store.add_metrics(feed.job_id, *done)
        feed.last_metrics = None
        feed.samples = Downsampler(self.metrics_interval)

    # -- reading --------------------------------------------------------------------------

    def _publish(self, feed: Feed, event: pb.JobEvent) -> None:
        for queue in feed.subscribers:
            queue.put_nowait(event)

    async def follow(self, job_id: str, from_seq: int = 0) -> AsyncIterator[list[pb.JobEvent]]:
        """The job's events from ``from_seq``: stored ones first, then live ones, in
        batches of the events that are ready at once (fewer messages for a fast cell).

        Raises:
            JobNotFound: no such job.
        """
        feed = self._feeds.get(job_id)
        if feed is None and self.store.get_job(job_id) is None:
            raise JobNotFound(job_id)
        queue: asyncio.Queue[pb.JobEvent] = asyncio.Queue()
        if feed is not None:
            feed.subscribers.add(queue)
        try:
            stored = list(self.store.events(job_id, from_seq))
            replay = self._with_samples(job_id, stored) if from_seq == 0 else stored
            for start in range(0, len(replay), REPLAY_BATCH):
                yield replay[start : start + REPLAY_BATCH]
            last = stored[-1].seq if stored else from_seq - 1
            if stored and is_end(stored[-1]):
                return
            if feed is None or job_id not in self._feeds:
                # Finished between the lookup and the replay: anything newer is stored.
                rest = list(self.store.events(job_id, last + 1))
                if rest:
                    yield rest
                return
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                fresh = [e for e in batch if e.seq > last or is_sample(e)]
                if not fresh:
                    continue
                last = max([last, *(e.seq for e in fresh if not is_sample(e))])
                yield fresh
                if is_end(fresh[-1]):
                    return
        finally:
            if feed is not None:
                feed.subscribers.discard(queue)

    def _with_samples(self, job_id: str, events: list[pb.JobEvent]) -> list[pb.JobEvent]:
        """``events`` with the job's stored telemetry samples placed among them by time."""
        samples = self.store.metrics(job_id)
        if not samples:
            return events
        out: list[pb.JobEvent] = []
        pending = iter(samples)
        sample = next(pending, None)
        for event in events:
            while sample is not None and sample[0] <= event.time:
                out.append(job_event(job_id, sample[1], at=sample[0]))
                sample = next(pending, None)
            out.append(event)
        return out
